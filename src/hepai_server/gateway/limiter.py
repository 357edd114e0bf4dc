"""The limiter: admits a call against the budgets and rate limits that apply to it, before any
upstream is called, and settles it with what it used.

A call is admitted against a reservation made from an estimate (its prompt's size, and
``max_tokens`` or the default output estimate), in one atomic step of the counters (one Redis
round trip when replicas share them): every budget and limit it touches has room, or it is
refused (429, OpenAI's ``insufficient_quota`` for a spent budget, ``rate_limit_exceeded`` for
a rate, with ``Retry-After`` and the ``x-ratelimit-*`` headers) and nothing is reserved. When
the call ends (however it ends) its reservation is released and what it actually used is
counted; a reservation a crash never releases expires. Budget counters the counters have not
seen are seeded from the ledger (``budget_daily``), so spend survives a restart of Redis.

When Redis cannot be reached, ``limits_redis_failure`` decides: ``closed`` refuses calls with
503; ``local`` limits each replica by itself, every rate divided by ``limits_replicas``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from functools import partial
from typing import Any

from sqlalchemy import Engine

from hepai_server.db.engine import transact
from hepai_server.errors import InsufficientQuota, RateLimited, ServiceUnavailable
from hepai_server.governance import budgets
from hepai_server.governance.prices import PriceBook, format_money
from hepai_server.governance.rules import Plan, Rules
from hepai_server.protocol.openai import Endpoint
from hepai_server.services.accounts import Caller
from hepai_server.state.counters import Check, Counters, Decision, MemoryCounters

log = logging.getLogger(__name__)

#: The x-ratelimit-* headers' names, per measure.
HEADERS = {
    measure: tuple(f"x-ratelimit-{part}-{measure}" for part in ("limit", "remaining", "reset"))
    for measure in ("requests", "tokens")
}

#: Called when a budget's spend crosses its warning threshold or its limit:
#: (budget, "warning" or "exhausted", first day of the period, "money" or "tokens", spent,
#: limit).
OnThreshold = Callable[[budgets.BudgetRule, str, date, str, int, int], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class Ticket:
    """An admitted call's reservation."""

    plan: Plan
    at: float
    counters: Counters
    #: The x-ratelimit-* headers of the answer.
    headers: dict[str, str]


class Limiter:
    def __init__(
        self,
        counters: Counters,
        *,
        engine: Engine,
        zone: tzinfo,
        reservation_ttl: float,
        redis_failure: str,
        replicas: int,
        on_threshold: OnThreshold | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._counters = counters
        self._local = counters if isinstance(counters, MemoryCounters) else MemoryCounters()
        self._engine = engine
        self._zone = zone
        self._ttl = reservation_ttl
        self._redis_failure = redis_failure
        self._replicas = replicas
        self._on_threshold = on_threshold
        self._clock = clock
        self.rules = Rules((), (), {})
        self.prices = PriceBook({})
        #: Settlements and alerts still under way, for ``drain``.
        self._settling: set[asyncio.Future[Any]] = set()
        self._last_alert: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return not self.rules.empty

    async def admit(
        self, caller: Caller, model: str, *, request_id: str, tokens: int, cost: int
    ) -> Ticket | None:
        """Reserve room for the call, or raise the 429 (or, without its counters, 503)."""
        rules = self.rules
        if rules.empty:
            return None
        now = self._clock()
        plan = rules.plan(
            caller,
            model,
            tokens=tokens,
            cost=cost,
            now=now,
            zone=self._zone,
            reservation_ttl=self._ttl,
        )
        if not plan.checks:
            return None
        counters = self._counters
        try:
            decision = await self._admit(counters, request_id, plan)
        except Exception as exc:  # the shared counters are unreachable
            if counters is self._local or self._redis_failure != "local":
                log.error("limits: the shared counters failed (%s); refusing calls", exc)
                raise ServiceUnavailable(
                    "the platform cannot check its limits right now; try again shortly",
                    headers={"retry-after": "1"},
                ) from None
            log.warning("limits: the shared counters failed (%s); limiting locally", exc)
            counters = self._local
            plan = rules.divided(self._replicas).plan(
                caller,
                model,
                tokens=tokens,
                cost=cost,
                now=now,
                zone=self._zone,
                reservation_ttl=self._ttl,
            )
            decision = await self._admit(counters, request_id, plan)
        headers = rate_headers(plan, decision)
        if not decision.admitted:
            raise refusal(plan, decision, model, headers)
        return Ticket(plan, decision.at, counters, headers)

    async def _admit(self, counters: Counters, request_id: str, plan: Plan) -> Decision:
        decision = await counters.admit(request_id, plan.checks, reservation_ttl=self._ttl)
        if decision.unseeded:
            seeded = await self._seeded(plan)
            decision = await counters.admit(request_id, seeded.checks, reservation_ttl=self._ttl)
        return decision

    async def _seeded(self, plan: Plan) -> Plan:
        """The plan with every budget check seeded from the ledger."""
        starts = {
            meter.budget.id: plan.periods[meter.budget.id][0]
            for meter in plan.meters
            if meter.budget
        }

        def work(session: Any) -> dict[int, tuple[int, int]]:
            return {
                budget_id: budgets.spent(session, budget_id, date.fromisoformat(start))
                for budget_id, start in starts.items()
            }

        spent = await transact(self._engine, work)
        checks = []
        for check, meter in zip(plan.checks, plan.meters, strict=True):
            if meter.budget is not None:
                money, tokens = spent[meter.budget.id]
                seed = money if meter.measure == "money" else tokens
                check = Check(check.kind, check.key, check.limit, check.amount, check.span, seed)
            checks.append(check)
        return Plan(tuple(checks), plan.meters, plan.budget_ids, plan.periods, plan.rated)

    def settle(self, ticket: Ticket, request_id: str, *, tokens: int, cost: int) -> None:
        """Release the call's reservation, counting what it used: at once in process, in the
        background when the counters are Redis."""
        actuals = ticket.plan.actuals(tokens=tokens, cost=cost)
        counters = ticket.counters
        if isinstance(counters, MemoryCounters):
            spent = counters.settle_now(request_id, ticket.plan.checks, actuals, at=ticket.at)
            self._alert(ticket.plan, actuals, spent)
            return
        # A callback rather than a task: Redis's counters answer with a future, and a task a
        # request would cost more than the rest of its settlement.
        pending = asyncio.ensure_future(
            counters.settle(request_id, ticket.plan.checks, actuals, at=ticket.at)
        )
        self._settling.add(pending)
        pending.add_done_callback(partial(self._settled, ticket.plan, actuals, request_id))

    def _settled(
        self, plan: Plan, actuals: list[int], request_id: str, done: asyncio.Future[list[int]]
    ) -> None:
        self._settling.discard(done)
        if done.cancelled() or done.exception() is not None:
            log.warning("limits: settling %s failed; its reservation expires", request_id)
            return
        self._alert(plan, actuals, done.result())

    def _alert(self, plan: Plan, actuals: list[int], spent: list[int]) -> None:
        """Tell of every budget this call's spend took past its warning or its limit."""
        if self._on_threshold is None or not plan.budget_ids:
            return
        for check, meter, used, after in zip(plan.checks, plan.meters, actuals, spent, strict=True):
            budget = meter.budget
            if budget is None:
                continue
            before, limit = after - used, check.limit
            for kind, threshold in (("warning", budget.warn_at * limit), ("exhausted", limit)):
                if after >= threshold > before:  # crossed by this call: rare, so worked out here
                    start = date.fromisoformat(plan.periods[budget.id][0])
                    measure = "money" if meter.measure == "money" else "tokens"
                    self._in_turn(self._on_threshold(budget, kind, start, measure, after, limit))

    def _in_turn(self, alert: Coroutine[Any, Any, None]) -> None:
        """Deliver alerts one after another, in the order they were raised: a budget's warning
        never arrives after its exhaustion."""
        previous = self._last_alert

        async def after_previous() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            await alert

        self._last_alert = self._background(after_previous())

    def _background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        return task

    async def drain(self) -> None:
        """Wait for settlements still in flight (at shutdown)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)


def estimate_tokens(
    endpoint: Endpoint, size: int, body: dict[str, Any], default_output: int
) -> tuple[int, int]:
    """A call's prompt and output tokens, estimated before it runs: about four bytes of request
    a token, and ``max_tokens`` (or the default) of output per choice."""
    prompt = size // 4 + 1
    if not endpoint.can_stream:
        return prompt, 0
    output = body.get("max_completion_tokens") or body.get("max_tokens") or default_output
    choices = body.get("n") or 1
    return prompt, int(output) * int(choices)


def rate_headers(plan: Plan, decision: Decision) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers: for requests and for tokens, the window closest to
    its limit."""
    used, failed, checks = decision.used, decision.failed, plan.checks
    tightest: dict[str, tuple[int, int, float]] = {}
    for index, measure in plan.rated:
        limit = checks[index][2]
        if index < len(used):
            count, reset = used[index]
        elif index == failed:  # the refusing window: nothing left until it resets
            count, reset = limit, decision.retry_after
        else:  # checks after the refusing one were not looked at
            break
        remaining = limit - count if count < limit else 0
        found = tightest.get(measure)
        if found is None or remaining < found[1]:
            tightest[measure] = (limit, remaining, reset)
    headers: dict[str, str] = {}
    resets: dict[float, str] = {}  # the requests' and tokens' windows often end together
    for measure, (limit, remaining, reset) in tightest.items():
        names = HEADERS[measure]
        headers[names[0]] = str(limit)
        headers[names[1]] = str(remaining)
        text = resets.get(reset)
        if text is None:
            text = resets[reset] = duration(reset)
        headers[names[2]] = text
    return headers


def refusal(plan: Plan, decision: Decision, model: str, headers: dict[str, str]) -> RateLimited:
    assert decision.failed is not None
    check, meter = plan.checks[decision.failed], plan.meters[decision.failed]
    headers = {**headers, "retry-after": str(max(math.ceil(decision.retry_after), 1))}
    if meter.budget is not None:
        budget = meter.budget
        limit = (
            format_money(check.limit, places=2)
            if meter.measure == "money"
            else f"{check.limit} tokens"
        )
        return InsufficientQuota(
            "You exceeded your current quota: the budget of this "
            f"{budget.scope} ({limit} per {budget.period}) is spent. Ask an administrator for "
            "more, or wait for the next period.",
            headers={"retry-after": headers["retry-after"]},
        )
    if meter.measure == "concurrency":
        message = f"Too many requests at once on {model}: at most {check.limit} at a time."
    else:
        kind = (
            "requests per minute (RPM)"
            if meter.measure == "requests"
            else "tokens per minute (TPM)"
        )
        message = (
            f"Rate limit reached for {kind} on {model}: limit {check.limit}. "
            f"Try again in {duration(decision.retry_after)}."
        )
    return RateLimited(message, headers=headers)


def duration(seconds: float) -> str:
    """Seconds as OpenAI's reset headers write them: ``20ms``, ``1s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{rest_text}" if minutes else rest_text
