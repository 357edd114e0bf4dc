"""What the limiter itself costs a request, in process: admit and settle one call after another
against the limits of benchmarks/limits.py (user and model RPM, TPM and concurrency, a money
budget: seven checks), counted in memory and in Redis.

    .venv/bin/python benchmarks/limiter_cost.py [--redis redis://127.0.0.1:6379/0] [--calls 20000]

CPU and wall time a request, best of three rounds, on uvloop (the gateway's loop). At one call
at a time every admission is a round trip to Redis, and the settlement before it rides along:
the wall time is what concurrency 1 adds to a request's latency. Pin it to a core
(``taskset -c 0``) with Redis on the other, as the gateway runs in benchmarks/limits.py.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import uvloop
from sqlalchemy import create_engine

from hepai_server.gateway.limiter import Limiter
from hepai_server.governance.budgets import BudgetRule
from hepai_server.governance.limits import RateRule
from hepai_server.governance.rules import Plan, Rules
from hepai_server.services.accounts import Caller
from hepai_server.state.counters import Check, Counters, MemoryCounters
from hepai_server.state.redis_counters import RedisCounters

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


async def measure(counters: Counters, calls: int) -> dict[str, float]:
    limits = limiter(counters)
    caller = Caller(1, 5, "bench", None, False, frozenset(), None, None)
    best: dict[str, float] = {}
    try:
        for round_ in range(3):
            cpu, wall = time.process_time(), time.perf_counter()
            for n in range(calls):
                request_id = f"r{round_}-{n}"
                ticket = await limits.admit(
                    caller, MODEL, request_id=request_id, tokens=100, cost=1000
                )
                assert ticket is not None
                limits.settle(ticket, request_id, tokens=90, cost=900)
            await limits.drain()
            cpu_us = (time.process_time() - cpu) / calls * 1e6
            wall_us = (time.perf_counter() - wall) / calls * 1e6
            if not best or cpu_us < best["cpu_us"]:
                best = {"cpu_us": cpu_us, "wall_us": wall_us}
    finally:
        await counters.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "memory": uvloop.run(measure(MemoryCounters(), args.calls)),
        "redis": uvloop.run(measure(RedisCounters(args.redis), args.calls)),
    }
    print("| Counters | CPU µs/request | Wall µs/request |")
    print("|---|---|---|")
    for name, row in results.items():
        print(f"| {name} | {row['cpu_us']:.1f} | {row['wall_us']:.1f} |")


if __name__ == "__main__":
    main()
