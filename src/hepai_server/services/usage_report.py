"""Usage reports: requests and tokens per day and per model, read from the daily totals.

Every report reads ``usage_daily`` (one row per day, user and model, kept by the usage writer),
never the per-request rows, so a page costs the same with a hundred rows or a hundred million.
Days are UTC days.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import astuple, dataclass
from datetime import date, timedelta
from typing import Any, TypeVarTuple

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from hepai_server.db.tables import Group, UsageDaily, User, user_groups

Row = TypeVarTuple("Row")

COUNTERS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "pages",
    "bytes",
    "cost_nanos",
)


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Which usage a report covers: a span of days, and optionally one user, group or model."""

    first_day: date
    last_day: date
    #: None: every account (admins only; the portal decides who may ask).
    user_id: int | None = None
    group: str | None = None
    model: str | None = None

    def apply(self, query: Select[*Row]) -> Select[*Row]:
        query = query.where(UsageDaily.day >= self.first_day, UsageDaily.day <= self.last_day)
        if self.user_id is not None:
            query = query.where(UsageDaily.user_id == self.user_id)
        if self.model:
            query = query.where(UsageDaily.model == self.model)
        if self.group:
            members = (
                select(user_groups.c.user_id)
                .join(Group, Group.id == user_groups.c.group_id)
                .where(Group.name == self.group)
            )
            query = query.where(UsageDaily.user_id.in_(members))
        return query

    def days(self) -> Iterator[date]:
        day = self.first_day
        while day <= self.last_day:
            yield day
            day += timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    pages: int = 0
    bytes: int = 0
    #: What it cost at the prices of the time, in nanos of the currency (governance.prices).
    cost_nanos: int = 0


def _sums() -> list[Any]:
    return [func.coalesce(func.sum(getattr(UsageDaily, name)), 0) for name in COUNTERS]


@dataclass(frozen=True, slots=True)
class Report:
    #: Every day of the span, days without usage included.
    per_day: list[tuple[date, Totals]]
    #: Models by total tokens, then requests, most used first.
    per_model: list[tuple[str, Totals]]
    overall: Totals
    #: Requests and total tokens per day and model (what stacked charts draw).
    day_model: dict[tuple[date, str], tuple[int, int]]


def report(session: Session, usage: UsageFilter) -> Report:
    """Per day, per model and overall, from one pass over the daily totals (grouped by day and
    model, at most days x models rows, summed up here)."""
    query = usage.apply(
        select(UsageDaily.day, UsageDaily.model, *_sums()).group_by(
            UsageDaily.day, UsageDaily.model
        )
    )
    days: dict[date, list[int]] = {}
    models: dict[str, list[int]] = {}
    day_model: dict[tuple[date, str], tuple[int, int]] = {}
    for day, model, *values in session.execute(query):
        day_model[day, model] = (int(values[0]), int(values[4]))
        for bucket in (
            days.setdefault(day, [0] * len(COUNTERS)),
            models.setdefault(model, [0] * len(COUNTERS)),
        ):
            for index, value in enumerate(values):
                bucket[index] += int(value)
    overall = [sum(column) for column in zip(*days.values(), strict=True)] or [0] * len(COUNTERS)
    ranked = sorted(
        ((model, Totals(*values)) for model, values in models.items()),
        key=lambda row: (-row[1].total_tokens, -row[1].requests, row[0]),
    )
    return Report(
        per_day=[(day, Totals(*days[day]) if day in days else Totals()) for day in usage.days()],
        per_model=ranked,
        overall=Totals(*overall),
        day_model=day_model,
    )


def detail_rows(session: Session, usage: UsageFilter) -> Iterator[tuple[Any, ...]]:
    """Day, user, model and the counters, for the CSV export: plain rows, no objects."""
    query = usage.apply(
        select(
            UsageDaily.day,
            func.coalesce(User.username, ""),
            UsageDaily.model,
            *(getattr(UsageDaily, name) for name in COUNTERS),
        )
        .outerjoin(User, User.id == UsageDaily.user_id)
        .order_by(UsageDaily.day, User.username, UsageDaily.model)
    )
    for row in session.execute(query):
        yield (row[0].isoformat(), *row[1:])


def models_used(session: Session, usage: UsageFilter) -> list[str]:
    query = usage.apply(select(UsageDaily.model).distinct()).order_by(UsageDaily.model)
    return list(session.scalars(query))


def per_account(session: Session, usage: UsageFilter) -> dict[int, Totals]:
    """Each account's totals (one pass over the by-user index), for admins' top lists."""
    query = usage.apply(select(UsageDaily.user_id, *_sums()).group_by(UsageDaily.user_id))
    return {
        user_id: Totals(*(int(value) for value in values))
        for user_id, *values in session.execute(query)
    }


def ranked(rows: dict[str, Totals], limit: int) -> list[tuple[str, Totals]]:
    ordered = sorted(rows.items(), key=lambda row: (-row[1].total_tokens, -row[1].requests, row[0]))
    return ordered[:limit]


def per_user(
    session: Session, accounts: dict[int, Totals], *, limit: int = 10
) -> list[tuple[str, Totals]]:
    """The accounts that used the most tokens (then requests)."""
    top = ranked({str(user_id): totals for user_id, totals in accounts.items()}, limit)
    ids = [int(user_id) for user_id, _totals in top]
    names = dict(session.execute(select(User.id, User.username).where(User.id.in_(ids))).all())
    return [(names.get(int(user_id), ""), totals) for user_id, totals in top]


def per_group(
    session: Session, accounts: dict[int, Totals], *, limit: int = 10
) -> list[tuple[str, Totals]]:
    """Usage summed over each group's members (an account in two groups counts in both)."""
    members = session.execute(
        select(Group.name, user_groups.c.user_id).join(
            user_groups, user_groups.c.group_id == Group.id
        )
    ).all()
    sums: dict[str, list[int]] = {}
    for name, user_id in members:
        if user_id in accounts:
            bucket = sums.setdefault(name, [0] * len(COUNTERS))
            for index, value in enumerate(astuple(accounts[user_id])):
                bucket[index] += value
    return ranked({name: Totals(*values) for name, values in sums.items()}, limit)
