"""The portal's flash (a one-time notice a form's redirect leaves for the next page), and
daily-total indexes that carry every counter, so usage pages read an index alone.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 03:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
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


def upgrade() -> None:
    op.add_column("web_sessions", sa.Column("flash", sa.Text(), nullable=True))
    op.drop_index("ix_usage_daily_user_day", table_name="usage_daily")
    op.create_index(
        "ix_usage_daily_user_day", "usage_daily", ["user_id", "day", "model", *COUNTERS]
    )
    op.create_index("ix_usage_daily_day_model", "usage_daily", ["day", "model", *COUNTERS])


def downgrade() -> None:
    op.drop_index("ix_usage_daily_day_model", table_name="usage_daily")
    op.drop_index("ix_usage_daily_user_day", table_name="usage_daily")
    op.create_index("ix_usage_daily_user_day", "usage_daily", ["user_id", "day"])
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.drop_column("flash")
