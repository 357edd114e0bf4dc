"""The counters limits keep: one small interface, in-process for the embedded default and in
Redis when several replicas share the limits (state/redis_counters.py).

A request is admitted against a list of ``Check``s in one atomic step: every check passes and
every one is reserved, or none is touched. Three kinds:

- ``window``: at most ``limit`` in a fixed window of ``span`` seconds (requests per minute, or
  tokens per minute reserved from an estimate); settled with the actual amount.
- ``concurrency``: at most ``limit`` requests at once; the slot is freed when the request is
  settled, or when its reservation expires (a crashed process frees its slots).
- ``budget``: what was spent in a budget's period, plus what requests in flight reserved, plus
  this request's estimate, at most ``limit``; settled with the actual cost (or tokens), the
  reservation released. A budget counter the counters have never seen (a new period, a
  restarted Redis) is seeded with what the ledger says was spent: ``seed``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

Kind = Literal["window", "concurrency", "budget"]


class Check(NamedTuple):
    """One counter a request is admitted against. A tuple: the limiter builds several for
    every request, and a tuple is built in a third of a frozen dataclass's time."""

    kind: Kind
    #: The counter's key: ``hepai:limit:rpm:user:5:``, ``hepai:budget:3:2026-12-01``.
    key: str
    limit: int
    #: Reserved on admission: 1 request, an estimate of tokens or cost; 1 for concurrency.
    amount: int
    #: A window's length, or how long a budget's period lasts from now (its counter's life).
    span: float
    #: For a budget: what the ledger says its period spent, if the counter may not know.
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    admitted: bool
    #: The index of the check that refused, when one did.
    failed: int | None = None
    #: Seconds until the refusing check could pass.
    retry_after: float = 0.0
    #: Per check: the amount used after this admission (refused: before it), and the seconds
    #: until it resets (windows; 0 for the others).
    used: tuple[tuple[int, float], ...] = ()
    #: A budget check had no counter yet and no seed: ask the ledger and try again.
    unseeded: bool = False
    #: The counters' clock at admission (seconds): which window the reservation went to.
    at: float = 0.0


class Counters(Protocol):
    async def admit(
        self, request_id: str, checks: Sequence[Check], *, reservation_ttl: float
    ) -> Decision: ...

    def settle(
        self, request_id: str, checks: Sequence[Check], actuals: Sequence[int], *, at: float
    ) -> Awaitable[list[int]]:
        """Release the request's reservations (made at ``at``), counting ``actuals`` (one per
        check) instead of the estimates; what each budget check's period has spent after it
        (0 for the other checks)."""
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Budget:
    spent: int
    expires: float
    #: request id -> (amount, reservation expiry)
    reserved: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: The sum of the amounts in ``reserved``, kept as they come and go.
    held: int = 0

    def release(self, request_id: str) -> None:
        amount, _ = self.reserved.pop(request_id, (0, 0.0))
        self.held -= amount


class MemoryCounters:
    """Counters in this process: exact for one process (the event loop makes each admission
    atomic), and what a replica falls back to when Redis is away.

    Each check costs O(1): concurrency slots and budget reservations are counted as they come
    and go, and those a crashed request left behind are dropped by the sweep that runs at most
    once a second (so an expired reservation holds its room up to a second longer)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        #: (key, window number) -> (used, expires)
        self._windows: dict[tuple[str, int], tuple[int, float]] = {}
        self._slots: dict[str, dict[str, float]] = {}  # key -> request id -> expiry
        self._budgets: dict[str, _Budget] = {}
        self._swept = 0.0

    async def admit(
        self, request_id: str, checks: Sequence[Check], *, reservation_ttl: float
    ) -> Decision:
        now = self._clock()
        if now - self._swept >= 1.0:
            self._sweep(now)
        # Checks unpacked rather than read by name, and the maps held in locals: this runs
        # for every limited request, and a NamedTuple's fields are properties.
        windows, slots, budgets = self._windows, self._slots, self._budgets
        used: list[tuple[int, float]] = []
        counted: list[tuple[str, int]] = []  # each window's key, for the second pass
        for index, (kind, key, limit, amount, span, seed) in enumerate(checks):
            if kind == "window":
                number = int(now // span)
                reset = (number + 1) * span - now
                window = (key, number)
                counted.append(window)
                count = windows.get(window, (0, 0.0))[0] + amount
                if count > limit:
                    return Decision(False, index, reset, tuple(used), False, now)
                used.append((count, reset))
            elif kind == "concurrency":
                live = len(slots.get(key, ())) + 1
                if live > limit:
                    return Decision(False, index, 1.0, tuple(used), False, now)
                used.append((live, 0.0))
            else:
                budget = budgets.get(key)
                if budget is None:
                    if seed is None:
                        return Decision(False, index, 0.0, tuple(used), True, now)
                    budget = budgets[key] = _Budget(seed, now + span)
                total = budget.spent + budget.held + amount
                if budget.spent >= limit or total > limit:
                    return Decision(False, index, span, tuple(used), False, now)
                used.append((total, 0.0))
        until = now + reservation_ttl
        counted.reverse()
        for kind, key, _, amount, span, _ in checks:
            if kind == "window":
                window = counted.pop()
                windows[window] = (
                    windows.get(window, (0, 0.0))[0] + amount,
                    (window[1] + 1) * span,
                )
            elif kind == "concurrency":
                slots.setdefault(key, {})[request_id] = until
            else:
                budget = budgets[key]
                budget.release(request_id)  # admitted twice under one id: the later counts
                budget.reserved[request_id] = (amount, until)
                budget.held += amount
        return Decision(True, used=tuple(used), at=now)

    async def settle(
        self, request_id: str, checks: Sequence[Check], actuals: Sequence[int], *, at: float
    ) -> list[int]:
        return self.settle_now(request_id, checks, actuals, at=at)

    def settle_now(
        self, request_id: str, checks: Sequence[Check], actuals: Sequence[int], *, at: float
    ) -> list[int]:
        """``settle``, without the coroutine: in process there is nothing to wait for."""
        windows = self._windows
        spent: list[int] = []
        for (kind, key, _, amount, span, _), actual in zip(checks, actuals, strict=True):
            if kind == "window":
                # The window it was reserved in, while that window is still counted.
                window = (key, int(at // span))
                found = windows.get(window)
                if found is not None:
                    windows[window] = (max(found[0] + actual - amount, 0), found[1])
                spent.append(0)
            elif kind == "concurrency":
                slots = self._slots.get(key)
                if slots is not None:
                    slots.pop(request_id, None)
                spent.append(0)
            else:
                budget = self._budgets.get(key)
                if budget is None:
                    spent.append(0)
                    continue
                budget.release(request_id)
                budget.spent += actual
                spent.append(budget.spent)
        return spent

    def _sweep(self, now: float) -> None:
        """Drop ended windows and periods, and the reservations of requests that never
        settled, so a long-running process keeps only live counters."""
        self._swept = now
        for window in [k for k, (_, expires) in self._windows.items() if expires <= now]:
            del self._windows[window]
        for name in [k for k, budget in self._budgets.items() if budget.expires <= now]:
            del self._budgets[name]
        for budget in self._budgets.values():
            for request_id in [r for r, (_, until) in budget.reserved.items() if until <= now]:
                budget.release(request_id)
        for name, slots in list(self._slots.items()):
            for request_id in [r for r, until in slots.items() if until <= now]:
                del slots[request_id]
            if not slots:
                del self._slots[name]

    async def close(self) -> None:
        return None
