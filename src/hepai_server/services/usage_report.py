"""Usage reports: requests and tokens per day and per model, read from the daily totals.

Every report reads the usage totals the usage writer keeps, never the per-request rows, so a
page costs the same with a hundred rows or a hundred million: ``usage_daily`` (per day, user and
model) for one account or group, ``usage_model_daily`` (per day and model) for every account at
once, and ``usage_user_weekly`` (per week and user) for every account's totals over the whole
weeks of a span. Days are UTC days.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import astuple, dataclass, replace
from datetime import date, timedelta
from typing import Any, TypeVarTuple

from sqlalchemy import Select, String, func, select, type_coerce
from sqlalchemy.orm import Session

from hepai_server.db.tables import (
    Group,
    UsageDaily,
    UsageModelDaily,
    UsageUserWeekly,
    User,
    user_groups,
)

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

    @property
    def every_account(self) -> bool:
        return self.user_id is None and self.group is None

    def apply(self, query: Select[*Row]) -> Select[*Row]:
        """The filter on usage_daily."""
        query = query.where(UsageDaily.day >= self.first_day, UsageDaily.day <= self.last_day)
        if self.model:
            query = query.where(UsageDaily.model == self.model)
        return self.accounts(query, UsageDaily.user_id)

    def apply_per_model(self, query: Select[*Row]) -> Select[*Row]:
        """The filter on usage_model_daily (which has every account's usage: no user or group)."""
        query = query.where(
            UsageModelDaily.day >= self.first_day, UsageModelDaily.day <= self.last_day
        )
        if self.model:
            query = query.where(UsageModelDaily.model == self.model)
        return query

    def accounts(self, query: Select[*Row], user_id: Any) -> Select[*Row]:
        """Narrowed to the user or the group's members, on the column ``user_id``."""
        if self.user_id is not None:
            query = query.where(user_id == self.user_id)
        if self.group:
            members = (
                select(user_groups.c.user_id)
                .join(Group, Group.id == user_groups.c.group_id)
                .where(Group.name == self.group)
            )
            query = query.where(user_id.in_(members))
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


def _sums(table: Any = UsageDaily) -> list[Any]:
    return [func.coalesce(func.sum(getattr(table, name)), 0) for name in COUNTERS]


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
    """Per day, per model and overall: for every account, from usage_model_daily, whose rows
    are already per day and model; for one user or group, from one pass over usage_daily
    grouped by day and model (at most days x models rows, summed up here)."""
    if usage.every_account:
        return _every_account(session, usage)
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
    return _assemble(usage, days, models, day_model)


def _every_account(session: Session, usage: UsageFilter) -> Report:
    """Every account's report: the sums per day and per model in SQL (a year of 20 models is
    7,300 rows, which Python would sum ten times slower), the two counters the charts draw per
    day and model as they are."""
    table = UsageModelDaily
    sums = _sums(table)
    days = {
        day: [int(value) for value in values]
        for day, *values in session.execute(
            usage.apply_per_model(select(table.day, *sums).group_by(table.day))
        )
    }
    models = {
        model: [int(value) for value in values]
        for model, *values in session.execute(
            usage.apply_per_model(select(table.model, *sums).group_by(table.model))
        )
    }
    # On the connection, the day as the driver gives it (text on SQLite), each made a date
    # once: the ORM's rows and a date parsed on every row were half of reading a year.
    drawn = usage.apply_per_model(
        select(type_coerce(table.day, String()), table.model, table.requests, table.total_tokens)
    )
    as_date: dict[Any, date] = {}
    day_model: dict[tuple[date, str], tuple[int, int]] = {}
    for raw, model, requests, tokens in session.connection().execute(drawn).all():
        day = as_date.get(raw)
        if day is None:
            day = as_date[raw] = date.fromisoformat(str(raw))
        day_model[day, model] = (int(requests), int(tokens))
    return _assemble(usage, days, models, day_model)


def _assemble(
    usage: UsageFilter,
    days: dict[date, list[int]],
    models: dict[str, list[int]],
    day_model: dict[tuple[date, str], tuple[int, int]],
) -> Report:
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
            # As text: a quarter of every account is tens of thousands of rows, and parsing
            # each day into a date only to print it again is a third of the export's time.
            type_coerce(UsageDaily.day, String()),
            func.coalesce(User.username, ""),
            UsageDaily.model,
            *(getattr(UsageDaily, name) for name in COUNTERS),
        )
        .outerjoin(User, User.id == UsageDaily.user_id)
        .order_by(UsageDaily.day, User.username, UsageDaily.model)
    )
    # On the connection: the ORM's result machinery would cost as much again as the query.
    for row in session.connection().execute(query):
        yield (str(row[0]), *row[1:])  # PostgreSQL's driver makes it a date still


def models_used(session: Session, usage: UsageFilter) -> list[str]:
    if usage.every_account:
        query = usage.apply_per_model(select(UsageModelDaily.model).distinct())
        return list(session.scalars(query.order_by(UsageModelDaily.model)))
    query = usage.apply(select(UsageDaily.model).distinct()).order_by(UsageDaily.model)
    return list(session.scalars(query))


def per_account(session: Session, usage: UsageFilter) -> dict[int, Totals]:
    """Each account's totals, for admins' top lists: the span's whole weeks from
    usage_user_weekly and the days either side of them from usage_daily (a year is 53 rows an
    account, where its days are up to 365 x models), or every day from usage_daily when the
    span is narrowed to a model (the weekly totals are not kept per model)."""
    first, end = usage.first_day, usage.last_day + timedelta(days=1)
    # The whole weeks within the span: Mondays from first_week, up to before last_week.
    first_week = first + timedelta(days=-first.weekday() % 7)
    last_week = end - timedelta(days=end.weekday())
    if usage.model or first_week >= last_week:
        return _per_account_daily(session, usage)
    sums: dict[int, list[int]] = {}
    weekly = usage.accounts(
        select(UsageUserWeekly.user_id, *_sums(UsageUserWeekly))
        .where(UsageUserWeekly.week >= first_week, UsageUserWeekly.week < last_week)
        .group_by(UsageUserWeekly.user_id),
        UsageUserWeekly.user_id,
    )
    days_before = (first, first_week - timedelta(days=1))
    days_after = (last_week, usage.last_day)
    parts = [weekly] + [
        _per_account_query(replace(usage, first_day=first_day, last_day=last_day))
        for first_day, last_day in (days_before, days_after)
        if first_day <= last_day
    ]
    for part in parts:
        for user_id, *values in session.execute(part).all():
            bucket = sums.setdefault(user_id, [0] * len(COUNTERS))
            for index, value in enumerate(values):
                bucket[index] += int(value)
    return {user_id: Totals(*values) for user_id, values in sums.items()}


def _per_account_query(usage: UsageFilter) -> Select[Any]:
    return usage.apply(select(UsageDaily.user_id, *_sums()).group_by(UsageDaily.user_id))


def _per_account_daily(session: Session, usage: UsageFilter) -> dict[int, Totals]:
    return {
        user_id: Totals(*(int(value) for value in values))
        for user_id, *values in session.execute(_per_account_query(usage))
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
