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

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Kind = Literal["window", "concurrency", "budget"]


@dataclass(frozen=True, slots=True)
class Check:
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

    async def settle(
        self, request_id: str, checks: Sequence[Check], actuals: Sequence[int], *, at: float
    ) -> list[int]:
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

    def purge(self, now: float) -> int:
        for request_id in [r for r, (_, until) in self.reserved.items() if until <= now]:
            del self.reserved[request_id]
        return sum(amount for amount, _ in self.reserved.values())


class MemoryCounters:
    """Counters in this process: exact for one process (the event loop makes each admission
    atomic), and what a replica falls back to when Redis is away."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[int, float]] = {}  # key:window -> (used, expires)
        self._slots: dict[str, dict[str, float]] = {}  # key -> request id -> expiry
        self._budgets: dict[str, _Budget] = {}
        self._swept = 0.0

    async def admit(
        self, request_id: str, checks: Sequence[Check], *, reservation_ttl: float
    ) -> Decision:
        now = self._clock()
        self._forget(now)
        used: list[tuple[int, float]] = []
        for index, check in enumerate(checks):
            if check.kind == "window":
                start = math.floor(now / check.span) * check.span
                reset = start + check.span - now
                count = self._windows.get(self._window_key(check, now), (0, 0.0))[0]
                if count + check.amount > check.limit:
                    return Decision(False, index, reset, tuple(used), False, now)
                used.append((count + check.amount, reset))
            elif check.kind == "concurrency":
                slots = self._slots.get(check.key, {})
                live = sum(1 for until in slots.values() if until > now)
                if live + 1 > check.limit:
                    return Decision(False, index, 1.0, tuple(used), False, now)
                used.append((live + 1, 0.0))
            else:
                budget = self._budgets.get(check.key)
                if budget is None:
                    if check.seed is None:
                        return Decision(False, index, 0.0, tuple(used), True, now)
                    budget = self._budgets[check.key] = _Budget(check.seed, now + check.span)
                reserved = budget.purge(now)
                if budget.spent >= check.limit or (
                    budget.spent + reserved + check.amount > check.limit
                ):
                    return Decision(False, index, check.span, tuple(used), False, now)
                used.append((budget.spent + reserved + check.amount, 0.0))
        for check in checks:
            self._reserve(request_id, check, now, reservation_ttl)
        return Decision(True, used=tuple(used), at=now)

    def _reserve(self, request_id: str, check: Check, now: float, ttl: float) -> None:
        if check.kind == "window":
            key = self._window_key(check, now)
            count, _ = self._windows.get(key, (0, 0.0))
            start = math.floor(now / check.span) * check.span
            self._windows[key] = (count + check.amount, start + check.span)
        elif check.kind == "concurrency":
            self._slots.setdefault(check.key, {})[request_id] = now + ttl
        else:
            self._budgets[check.key].reserved[request_id] = (check.amount, now + ttl)

    @staticmethod
    def _window_key(check: Check, now: float) -> str:
        return f"{check.key}:{math.floor(now / check.span)}"

    async def settle(
        self, request_id: str, checks: Sequence[Check], actuals: Sequence[int], *, at: float
    ) -> list[int]:
        spent: list[int] = []
        for check, actual in zip(checks, actuals, strict=True):
            if check.kind == "window":
                # The window it was reserved in, while that window is still counted.
                key = self._window_key(check, at)
                if key in self._windows:
                    count, expires = self._windows[key]
                    self._windows[key] = (max(count + actual - check.amount, 0), expires)
                spent.append(0)
            elif check.kind == "concurrency":
                self._slots.get(check.key, {}).pop(request_id, None)
                spent.append(0)
            else:
                budget = self._budgets.get(check.key)
                if budget is None:
                    spent.append(0)
                    continue
                budget.reserved.pop(request_id, None)
                budget.spent += actual
                spent.append(budget.spent)
        return spent

    def _forget(self, now: float) -> None:
        """Drop ended windows and periods, so a long-running process keeps only live counters
        (at most once a second: a sweep walks every counter)."""
        if now - self._swept < 1.0:
            return
        self._swept = now
        for key in [k for k, (_, expires) in self._windows.items() if expires <= now]:
            del self._windows[key]
        for key in [k for k, budget in self._budgets.items() if budget.expires <= now]:
            del self._budgets[key]
        for key in [k for k, slots in self._slots.items() if not slots]:
            del self._slots[key]

    async def close(self) -> None:
        return None
