"""Proof that the ledger's aggregates agree with its rows: the daily totals (``usage_daily``)
and every budget's daily spend (``budget_daily``) recomputed from ``usage_records``."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, tzinfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from hepai_server.db.governance import BudgetDaily
from hepai_server.db.tables import UsageDaily, UsageRecord

DAILY = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "pages",
    "bytes",
    "cost_nanos",
)


def disagreements(session: Session, *, zone: tzinfo) -> list[str]:
    """Every place where a stored total differs from what the rows add up to (none: agreed)."""
    daily: dict[tuple[date, int, str], list[int]] = defaultdict(lambda: [0] * len(DAILY))
    budget: dict[tuple[int, date], list[int]] = defaultdict(lambda: [0, 0, 0])
    rows = session.execute(
        select(
            UsageRecord.created_at,
            UsageRecord.user_id,
            UsageRecord.model,
            UsageRecord.status_code,
            UsageRecord.prompt_tokens,
            UsageRecord.completion_tokens,
            UsageRecord.total_tokens,
            UsageRecord.pages,
            UsageRecord.bytes,
            UsageRecord.cost_nanos,
            UsageRecord.budgets,
        ).execution_options(yield_per=10_000)
    )
    for created, user, model, status, prompt, completion, total, pages, size, cost, charged in rows:
        counts = daily[(created.date(), user or 0, model)]
        for index, value in enumerate(
            (1, int(status >= 400), prompt, completion, total, pages, size, cost)
        ):
            counts[index] += value or 0
        if charged:
            day = created.astimezone(zone).date()
            for budget_id in charged.split(","):
                spend = budget[(int(budget_id), day)]
                spend[0] += 1
                spend[1] += cost or 0
                spend[2] += total or 0
    found = []
    stored_daily = {
        (row.day, row.user_id, row.model): [getattr(row, name) for name in DAILY]
        for row in session.scalars(select(UsageDaily))
    }
    for day_key in sorted(set(daily) | set(stored_daily)):
        rows_say, stored = daily.get(day_key), stored_daily.get(day_key)
        if (rows_say or [0] * len(DAILY)) != (stored or [0] * len(DAILY)):
            found.append(f"usage_daily {day_key}: stored {stored}, rows add up to {rows_say}")
    stored_budget = {
        (row.budget_id, row.day): [row.requests, row.cost_nanos, row.tokens]
        for row in session.scalars(select(BudgetDaily))
    }
    for budget_key in sorted(set(budget) | set(stored_budget)):
        rows_add, kept = budget.get(budget_key), stored_budget.get(budget_key)
        if (rows_add or [0, 0, 0]) != (kept or [0, 0, 0]):
            found.append(f"budget_daily {budget_key}: stored {kept}, rows add up to {rows_add}")
    return found
