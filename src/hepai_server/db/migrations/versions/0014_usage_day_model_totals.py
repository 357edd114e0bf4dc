"""Usage totals per day and model over every account (``usage_model_daily``) and per week and
user over every model (``usage_user_weekly``), kept beside the per-user daily totals so that
the year-long usage views of every account read thousands of rows, not every account's every
day and model. Both are filled from the usage rows already recorded.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

COUNTERS = [
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "pages",
    "bytes",
    "cost_nanos",
]


def counter_columns() -> list[sa.Column[int]]:
    return [sa.Column(name, sa.BigInteger(), nullable=False) for name in COUNTERS]


def upgrade() -> None:
    op.create_table(
        "usage_model_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        *counter_columns(),
        sa.PrimaryKeyConstraint("day", "model"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "usage_user_weekly",
        sa.Column("week", sa.Date(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        *counter_columns(),
        sa.PrimaryKeyConstraint("week", "user_id"),
        sqlite_with_rowid=False,
    )
    backfill()


def backfill() -> None:
    """Sum the usage rows, as the usage writer adds them: UTC days, weeks from Monday."""
    postgres = op.get_bind().dialect.name == "postgresql"
    day = "(created_at AT TIME ZONE 'UTC')::date" if postgres else "date(created_at)"
    # SQLite's strftime('%w') counts from Sunday (0); a week starts on the Monday before.
    week = (
        f"{day} - (extract(isodow FROM {day})::int - 1)"
        if postgres
        else "date(created_at, '-' || ((strftime('%w', created_at) + 6) % 7) || ' days')"
    )
    sums = (
        "count(*), sum(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END), "
        "coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
        "coalesce(sum(total_tokens), 0), coalesce(sum(pages), 0), coalesce(sum(bytes), 0), "
        "coalesce(sum(cost_nanos), 0)"
    )
    counters = ", ".join(COUNTERS)
    op.execute(
        f"INSERT INTO usage_model_daily (day, model, {counters}) "
        f"SELECT {day}, model, {sums} FROM usage_records GROUP BY {day}, model"
    )
    op.execute(
        f"INSERT INTO usage_user_weekly (week, user_id, {counters}) "
        f"SELECT {week}, coalesce(user_id, 0), {sums} FROM usage_records "
        f"GROUP BY {week}, coalesce(user_id, 0)"
    )


def downgrade() -> None:
    op.drop_table("usage_user_weekly")
    op.drop_table("usage_model_daily")
