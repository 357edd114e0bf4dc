"""Staying up while upstreams fail: a failing deployment is cooled down and probed back in, and
retries draw on a budget so that failing over never multiplies the load on an outage.

- ``Breaker``: a deployment (a provider's model, or a worker) that fails ``failures`` times
  within ``window`` seconds (a connection that cannot be made, a timeout, a 5xx or 429) is left
  out of the order for ``cooldown`` seconds; then one call at a time may try it (half open): a
  success brings it back, a failure cools it down again. The provider health checks feed it
  the same way. Each process keeps its own, as a load balancer's outlier detection does.
- ``RetryBudget``: each request adds ``ratio`` of a token, each retry (a failover to the next
  deployment or to a fallback model) takes one; a few retries a second are always allowed.
  While everything fails, retries stay near ``ratio`` of the requests instead of multiplying
  them by the number of deployments.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _State:
    failures: deque[float] = field(default_factory=deque)
    cooled_until: float = 0.0
    #: A half-open trial is running: others keep away until it ends.
    probing: bool = False


class Breaker:
    def __init__(
        self,
        *,
        failures: int,
        window: float,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = failures
        self._window = window
        self._cooldown = cooldown
        self._clock = clock
        self._states: dict[str, _State] = {}

    def available(self, name: str) -> bool:
        """Whether a call may go to this deployment now (taking the half-open trial if its
        cooldown has passed)."""
        state = self._states.get(name)
        if state is None or not state.cooled_until:
            return True
        if state.probing or self._clock() < state.cooled_until:
            return False
        state.probing = True
        return True

    def cooled(self, name: str) -> bool:
        state = self._states.get(name)
        return state is not None and state.cooled_until > self._clock()

    def succeeded(self, name: str) -> None:
        state = self._states.get(name)
        if state is not None:
            del self._states[name]

    def failed(self, name: str) -> None:
        now = self._clock()
        state = self._states.setdefault(name, _State())
        if state.probing:  # the trial failed: cool down again
            state.probing = False
            state.cooled_until = now + self._cooldown
            return
        state.failures.append(now)
        while state.failures and state.failures[0] <= now - self._window:
            state.failures.popleft()
        if len(state.failures) >= self._limit:
            state.failures.clear()
            state.cooled_until = now + self._cooldown

    def released(self, name: str) -> None:
        """A half-open trial that neither succeeded nor failed (the client left): let the
        next call try."""
        state = self._states.get(name)
        if state is not None:
            state.probing = False

    def cooling(self) -> dict[str, float]:
        """Deployments cooling down, with the seconds left (for the admins' view)."""
        now = self._clock()
        return {n: s.cooled_until - now for n, s in self._states.items() if s.cooled_until > now}


class RetryBudget:
    def __init__(
        self,
        *,
        ratio: float,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ratio = ratio
        self._per_second = per_second
        self._clock = clock
        self._tokens = 0.0
        self._last = clock()
        #: The most tokens kept: a quiet spell does not bank an unbounded burst of retries.
        self._cap = max(per_second * 10, 10.0)

    def request(self) -> None:
        """A request came in: it earns ``ratio`` of a retry."""
        self._tokens = min(self._tokens + self._ratio, self._cap)

    def retry(self) -> bool:
        """Whether one more attempt may be made (and take its token)."""
        now = self._clock()
        self._tokens = min(self._tokens + (now - self._last) * self._per_second, self._cap)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
