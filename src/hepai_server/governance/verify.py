"""Proof that the ledger's aggregates agree with its rows: the usage totals (``usage_daily``
per day, user and model, ``usage_model_daily`` per day and model, ``usage_user_weekly`` per
week and user) and every budget's daily spend (``budget_daily``) recomputed from
``usage_records``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta, tzinfo
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hepai_server.db.governance import BudgetDaily
from hepai_server.db.tables import UsageDaily, UsageModelDaily, UsageRecord, UsageUserWeekly

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
    per_model: dict[tuple[date, str], list[int]] = defaultdict(lambda: [0] * len(DAILY))
    per_week: dict[tuple[date, int], list[int]] = defaultdict(lambda: [0] * len(DAILY))
    for (day, user, model), counts in daily.items():
        week = day - timedelta(days=day.weekday())
        for bucket in (per_model[(day, model)], per_week[(week, user)]):
            for index, value in enumerate(counts):
                bucket[index] += value
    return [
        *compare(
            "usage_daily",
            daily,
            (
                ((row.day, row.user_id, row.model), counters(row))
                for row in session.scalars(select(UsageDaily))
            ),
        ),
        *compare(
            "usage_model_daily",
            per_model,
            (
                ((row.day, row.model), counters(row))
                for row in session.scalars(select(UsageModelDaily))
            ),
        ),
        *compare(
            "usage_user_weekly",
            per_week,
            (
                ((row.week, row.user_id), counters(row))
                for row in session.scalars(select(UsageUserWeekly))
            ),
        ),
        *compare(
            "budget_daily",
            budget,
            (
                ((row.budget_id, row.day), [row.requests, row.cost_nanos, row.tokens])
                for row in session.scalars(select(BudgetDaily))
            ),
        ),
    ]


def counters(row: Any) -> list[int]:
    return [getattr(row, name) for name in DAILY]


def compare(
    table: str, rows_say: dict[Any, list[int]], stored: Iterable[tuple[Any, list[int]]]
) -> list[str]:
    """The keys where ``table``'s stored counters differ from the rows' sums (a key missing on
    one side counts as all zeros there)."""
    kept = dict(stored)
    found = []
    for key in sorted(set(rows_say) | set(kept)):
        computed, held = rows_say.get(key), kept.get(key)
        zeros = [0] * len(computed or held or [])
        if (computed or zeros) != (held or zeros):
            found.append(f"{table} {key}: stored {held}, rows add up to {computed}")
    return found
