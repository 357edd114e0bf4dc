"""What the limiter itself costs a request, in process: admit and settle one call after another
against the limits of benchmarks/limits.py (user and model RPM, TPM and concurrency, a money
budget: seven checks), counted in memory and in Redis.

    .venv/bin/python benchmarks/limiter_cost.py [--redis redis://127.0.0.1:6379/0]
        [--calls 20000] [--think-us 150]

Per request, best of three rounds, on uvloop (the gateway's loop): the CPU and wall time, the
median admission (what concurrency 1 adds to a request's latency), and for Redis the script
calls and Redis's own CPU for them. With ``--think-us 0`` each admission follows the last
settlement at once and takes it along; with a pause (the gateway's work on the next request)
the settlement has gone alone and the admission does only its own work, as at concurrency 1
in the gateway. Pin it to a core (``taskset -c 0``) with Redis on the other, as the gateway
runs in benchmarks/limits.py."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import uvloop
from redis import Redis
from sqlalchemy import create_engine

from hepai_server.gateway.limiter import Limiter
from hepai_server.governance.budgets import BudgetRule
from hepai_server.governance.limits import RateRule
from hepai_server.governance.rules import Plan, Rules
from hepai_server.services.accounts import Caller
from hepai_server.state.counters import Check, Counters, MemoryCounters
from hepai_server.state.redis_counters import RedisCounters
from services import script_stats

MODEL = "bench/model"


def limiter(counters: Counters) -> Limiter:
    limits = Limiter(
        counters,
        engine=create_engine("sqlite://"),
        zone=timezone(timedelta(hours=8)),
        reservation_ttl=600,
        redis_failure="closed",
        replicas=1,
    )
    budget = BudgetRule(1, "user", 5, 10**18, None, "month", 0.8, datetime(2026, 1, 1, tzinfo=UTC))
    rates = [
        RateRule("user", 5, "", 10**7, 10**10, 100_000),
        RateRule("model", 0, MODEL, 10**7, 10**10, 100_000),
    ]
    limits.rules = Rules([budget], rates, {})

    async def seeded(plan: Plan) -> Plan:  # a budget that has spent nothing: no ledger asked
        checks = tuple(
            Check(c.kind, c.key, c.limit, c.amount, c.span, 0 if c.kind == "budget" else None)
            for c in plan.checks
        )
        return Plan(checks, plan.meters, plan.budget_ids, plan.periods, plan.rated)

    limits._seeded = seeded  # type: ignore[method-assign]
    return limits


async def measure(counters: Counters, calls: int, think_us: float, redis: str | None) -> Row:
    """``calls`` requests one after another, each admitted and settled, then ``think_us`` of
    CPU spent before the next (the gateway's own work between one request's answer and the
    next one's admission, during which a settlement sent at once is done by Redis)."""
    limits = limiter(counters)
    caller = Caller(1, 5, "bench", None, False, frozenset(), None, None)
    stats = Redis.from_url(redis) if redis else None
    best: Row | None = None
    try:
        for round_ in range(3):
            before = script_stats(stats) if stats else (0, 0)
            waits: list[float] = []
            cpu, wall = time.process_time(), time.perf_counter()
            for n in range(calls):
                request_id = f"r{round_}-{n}"
                started = time.perf_counter()
                ticket = await limits.admit(
                    caller, MODEL, request_id=request_id, tokens=100, cost=1000
                )
                waits.append(time.perf_counter() - started)
                assert ticket is not None
                limits.settle(ticket, request_id, tokens=90, cost=900)
                if think_us:
                    await asyncio.sleep(0)  # the handler returns: the loop runs what is ready
                    spin(think_us)
            await limits.drain()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            after = script_stats(stats) if stats else (0, 0)  # outside the timed part
            scripts, redis_us = after[0] - before[0], after[1] - before[1]
            row = Row(
                cpu_us=cpu / calls * 1e6 - think_us,
                wall_us=wall / calls * 1e6 - think_us,
                admission_p50_us=statistics.median(waits) * 1e6,
                scripts=scripts / calls,
                redis_us=redis_us / calls,
            )
            if best is None or row.cpu_us < best.cpu_us:
                best = row
    finally:
        await counters.close()
        if stats is not None:
            stats.close()
    assert best is not None
    return best


@dataclass
class Row:
    cpu_us: float
    wall_us: float
    #: How long an admission took, the median: what the limiter adds to a request's latency.
    admission_p50_us: float
    #: Calls of the Redis script a request, and Redis's own CPU for them (its commandstats).
    scripts: float
    redis_us: float


def spin(microseconds: float) -> None:
    """Keep the CPU busy, as the gateway's own work on a request would."""
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument(
        "--think-us", type=float, default=0, help="CPU spent between a request and the next"
    )
    args = parser.parse_args()
    results = {
        "memory": uvloop.run(measure(MemoryCounters(), args.calls, args.think_us, None)),
        "redis": uvloop.run(
            measure(RedisCounters(args.redis), args.calls, args.think_us, args.redis)
        ),
    }
    print(
        "| Counters | Gateway CPU µs/request | Wall µs/request | Admission p50 µs "
        "| Scripts/request | Redis CPU µs/request |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in results.items():
        print(
            f"| {name} | {row.cpu_us:.1f} | {row.wall_us:.1f} | {row.admission_p50_us:.1f} "
            f"| {row.scripts:.2f} | {row.redis_us:.1f} |"
        )


if __name__ == "__main__":
    main()
