"""The one selection policy: in which order to try the places that serve a model.

Providers' deployments and workers are both candidates: a ``priority`` (lower is tried first,
0 the most preferred) and a ``weight`` (a larger share among equals). Within a priority the
order is a weighted random draw scaled down by each candidate's load, so calls spread by weight
and short queues win more often; every candidate appears once, so each failover goes somewhere
not tried yet. Its variants:

- ``spread``: the draw above, for calls.
- ``keyed``: a fixed order for one key (rendezvous hashing), so a call retried with the same
  idempotency key reaches the worker that holds its task.
- ``best``: the least loaded of the most preferred, for "which worker serves this model?".
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, TypeVar


class Candidate(Protocol):
    @property
    def priority(self) -> int: ...

    @property
    def weight(self) -> float: ...


C = TypeVar("C", bound=Candidate)
#: A candidate's load: queued calls per unit of speed, counting this process's own in flight.
Load = Callable[[C], float]


def no_load(_candidate: object) -> float:
    return 0.0


def spread(candidates: Sequence[C], rng: random.Random, load: Load[C] = no_load) -> list[C]:
    """Every candidate once, lowest priority first; within a priority, earlier the heavier it
    weighs and the less loaded it is.

    Efraimidis-Spirakis: sorting by u**(1/w) draws a weighted permutation in one pass; dividing
    by 1 + load makes a busy candidate come first less often without ever leaving it out.
    """
    if len(candidates) == 1:
        return list(candidates)

    def key(candidate: C) -> tuple[int, float]:
        draw = rng.random() ** (1.0 / max(candidate.weight, 1e-6))
        return candidate.priority, -draw / (1.0 + load(candidate))

    return sorted(candidates, key=key)


def keyed(candidates: Sequence[C], key: str, name: Callable[[C], str]) -> list[C]:
    """The candidates in an order fixed by ``key``, the most preferred priority first: those
    joining or leaving move only the keys they take or held."""

    def rank(candidate: C) -> tuple[int, bytes]:
        digest = hashlib.blake2b(f"{key}\0{name(candidate)}".encode(), digest_size=8)
        return candidate.priority, digest.digest()

    return sorted(candidates, key=rank)


def best(candidates: Sequence[C], load: Load[C] = no_load) -> C:
    """The least loaded candidate of the most preferred priority."""
    return min(candidates, key=lambda candidate: (candidate.priority, load(candidate)))


class Occupancy:
    """Calls this process has in flight at each worker, whoever made them (the API, the
    playground, the OpenAI routes to worker models): the part of a worker's load its last
    heartbeat cannot know yet."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[str, int] = {}

    def __getitem__(self, worker_id: str) -> int:
        return self._calls.get(worker_id, 0)

    def snapshot(self) -> dict[str, int]:
        """Calls in flight at each worker that has any, right now."""
        return dict(self._calls)

    @contextmanager
    def holding(self, worker_id: str) -> Iterator[None]:
        self._calls[worker_id] = self._calls.get(worker_id, 0) + 1
        try:
            yield
        finally:
            left = self._calls[worker_id] - 1
            if left:
                self._calls[worker_id] = left
            else:
                del self._calls[worker_id]
