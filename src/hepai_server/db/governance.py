"""The governance tables: model prices, budgets and their daily spend, rate limits, group
administrators, the alerts and notices budgets raise; and the providers' health."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from hepai_server.db.tables import Base, UTCDateTime, utcnow


class ModelPrice(Base):
    """A model's price set by an admin; it replaces the providers file's. Token prices in
    nanos per token, unit prices in nanos (governance.prices); null: not set."""

    __tablename__ = "model_prices"

    model_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    input: Mapped[int | None] = mapped_column(BigInteger)
    cached_input: Mapped[int | None] = mapped_column(BigInteger)
    output: Mapped[int | None] = mapped_column(BigInteger)
    reasoning: Mapped[int | None] = mapped_column(BigInteger)
    embedding: Mapped[int | None] = mapped_column(BigInteger)
    per_page: Mapped[int | None] = mapped_column(BigInteger)
    per_call: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(128))


class Budget(Base):
    """What a user, a group or a key may spend (money, tokens or both) over a period.

    ``scope`` is ``user``, ``group`` or ``key`` and ``subject_id`` that row's id. ``period`` is
    ``day``, ``week``, ``month`` (calendar, in the platform's budget time zone) or ``once`` (a
    grant counted from ``starts_at``). ``warn_at`` is the share of either limit at which its
    owner and the admins are warned.
    """

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("scope", "subject_id", name="uq_budgets_subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))
    subject_id: Mapped[int] = mapped_column(Integer)
    amount_nanos: Mapped[int | None] = mapped_column(BigInteger)
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    period: Mapped[str] = mapped_column(String(8), default="month")
    warn_at: Mapped[float] = mapped_column(Float, default=0.8)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(128))


class BudgetDaily(Base):
    """What was charged to a budget per day (in the budget time zone), summed by the usage
    writer in the same transaction as the rows: a period's spend is the sum of its days."""

    __tablename__ = "budget_daily"

    budget_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)


class RateLimit(Base):
    """Requests per minute, tokens per minute and requests at once, for a key, a user, a group
    or everyone (``scope`` ``key``, ``user``, ``group``, ``all``; ``subject_id`` 0 for ``all``),
    on every model (``model`` "") or one model. Null: no limit of that kind."""

    __tablename__ = "rate_limits"
    __table_args__ = (
        UniqueConstraint("scope", "subject_id", "model", name="uq_rate_limits_subject"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))
    subject_id: Mapped[int] = mapped_column(Integer, default=0)
    model: Mapped[str] = mapped_column(String(256), default="")
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(BigInteger)
    concurrency: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(128))


class GroupAdmin(Base):
    """A user who administers a group (an experiment's or a department's lead): sees its usage
    and spend, sets its members' budgets and limits within the group's own, manages members."""

    __tablename__ = "group_admins"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class BudgetAlert(Base):
    """An alert a budget raised in one period: inserted once (the key), so every replica
    raises each alert once."""

    __tablename__ = "budget_alerts"

    budget_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period_start: Mapped[date] = mapped_column(Date, primary_key=True)
    #: ``warning`` (the soft threshold) or ``exhausted`` (the hard limit).
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Notice(Base):
    """Something the portal shows a user until it is seen (a budget's warning)."""

    __tablename__ = "notices"
    __table_args__ = (Index("ix_notices_user_created", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ProviderHealth(Base):
    """A provider's last health check (gateway/probes.py), for the admins' view."""

    __tablename__ = "provider_health"

    provider: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: It answered its model list (200).
    ok: Mapped[bool] = mapped_column(Boolean)
    #: It could not be reached, or answered 5xx or 429: its deployments count a failure.
    down: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(String(256), default="")
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
