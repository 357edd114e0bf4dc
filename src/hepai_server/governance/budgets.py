"""Budgets: what a user, a group or a key may spend, over which period, and what it has spent.

A budget limits money (``amount_nanos``), tokens, or both, over a calendar day, week or month
in the budgets' time zone, or once (a grant, counted from when it was given). Its spend is the
sum of the ledger's rows charged to it, kept per day in ``budget_daily`` by the usage writer in
the rows' own transaction, so a period's spend is the sum of its days and can always be
recomputed from the rows (``hepai-server usage verify``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hepai_server.db.governance import Budget, BudgetDaily
from hepai_server.errors import InvalidRequest, NotFound

SCOPES = ("user", "group", "key")
PERIODS = ("day", "week", "month", "once")
#: A one-off grant's counter lives this long (it has no period to end).
ONCE_SPAN = timedelta(days=3650)


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """A budget as the limiter applies it."""

    id: int
    scope: str
    subject_id: int
    amount_nanos: int | None
    tokens: int | None
    period: str
    warn_at: float
    starts_at: datetime

    def window(self, now: datetime, zone: tzinfo) -> tuple[date, datetime]:
        """The first day of the period ``now`` is in, and when the period ends."""
        if self.period == "once":
            return self.starts_at.astimezone(zone).date(), now + ONCE_SPAN
        local = now.astimezone(zone)
        day = local.date()
        if self.period == "day":
            start, end = day, day + timedelta(days=1)
        elif self.period == "week":
            start = day - timedelta(days=day.weekday())
            end = start + timedelta(days=7)
        else:
            start = day.replace(day=1)
            end = (start + timedelta(days=32)).replace(day=1)
        return start, datetime.combine(end, datetime.min.time(), zone)


def rule_of(budget: Budget) -> BudgetRule:
    return BudgetRule(
        id=budget.id,
        scope=budget.scope,
        subject_id=budget.subject_id,
        amount_nanos=budget.amount_nanos,
        tokens=budget.tokens,
        period=budget.period,
        warn_at=budget.warn_at,
        starts_at=budget.starts_at,
    )


def set_budget(
    session: Session,
    *,
    scope: str,
    subject_id: int,
    amount_nanos: int | None,
    tokens: int | None,
    period: str,
    warn_at: float,
    now: datetime,
    by: str | None,
) -> Budget:
    """Set the budget of a user, group or key (replacing the one it had)."""
    if scope not in SCOPES:
        raise InvalidRequest(f"a budget is for one of {', '.join(SCOPES)}", param="scope")
    if period not in PERIODS:
        raise InvalidRequest(f"a budget's period is one of {', '.join(PERIODS)}", param="period")
    if amount_nanos is None and tokens is None:
        raise InvalidRequest("a budget limits an amount, tokens, or both", param="amount")
    if (amount_nanos is not None and amount_nanos < 0) or (tokens is not None and tokens < 0):
        raise InvalidRequest("a budget's limits are not negative", param="amount")
    if not 0 < warn_at <= 1:
        raise InvalidRequest(
            "warn_at is a share of the limit, above 0 and at most 1", param="warn_at"
        )
    budget = session.scalar(
        select(Budget).where(Budget.scope == scope, Budget.subject_id == subject_id)
    )
    if budget is None:
        budget = Budget(scope=scope, subject_id=subject_id, starts_at=now)
        session.add(budget)
    elif period == "once" and budget.period != "once":
        budget.starts_at = now  # a grant counts from when it is given
    budget.amount_nanos, budget.tokens = amount_nanos, tokens
    budget.period, budget.warn_at = period, warn_at
    budget.updated_at, budget.updated_by = now, by
    session.flush()
    return budget


def clear_budget(session: Session, *, scope: str, subject_id: int) -> None:
    result = session.execute(
        delete(Budget).where(Budget.scope == scope, Budget.subject_id == subject_id)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"no budget for {scope} {subject_id}")


def list_budgets(session: Session) -> Sequence[Budget]:
    return session.scalars(select(Budget).order_by(Budget.scope, Budget.subject_id)).all()


def spent(
    session: Session, budget_id: int, since: date, until: date | None = None
) -> tuple[int, int]:
    """What a budget was charged from the day ``since`` (until before ``until``): money in
    nanos, and tokens."""
    query = select(
        func.coalesce(func.sum(BudgetDaily.cost_nanos), 0),
        func.coalesce(func.sum(BudgetDaily.tokens), 0),
    ).where(BudgetDaily.budget_id == budget_id, BudgetDaily.day >= since)
    if until is not None:
        query = query.where(BudgetDaily.day < until)
    cost, tokens = session.execute(query).one()
    return int(cost), int(tokens)


def utcnow() -> datetime:
    return datetime.now(UTC)
