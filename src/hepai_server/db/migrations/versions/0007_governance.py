"""Governance: prices, budgets and their daily spend, rate limits, group administrators, budget
alerts and portal notices; each usage row carries its cost and the budgets it was charged to,
and its request id becomes unique (the platform's own id: the client's is kept beside it).

Rows recorded before this revision cost nothing (no prices existed). Request ids that repeat
among them (clients could choose theirs) get a suffix, so the ledger's key is unique without
losing a row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "usage_records",
        sa.Column("cost_nanos", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.add_column("usage_records", sa.Column("budgets", sa.String(length=256), nullable=True))
    op.add_column(
        "usage_records", sa.Column("client_request_id", sa.String(length=64), nullable=True)
    )
    op.add_column(
        "usage_daily",
        sa.Column("cost_nanos", sa.BigInteger(), nullable=False, server_default="0"),
    )
    bind = op.get_bind()
    repeated = bind.execute(
        sa.text(
            "SELECT id, request_id FROM usage_records WHERE request_id IN "
            "(SELECT request_id FROM usage_records GROUP BY request_id HAVING count(*) > 1) "
            "ORDER BY request_id, id"
        )
    ).all()
    previous, n = None, 0
    for row_id, request_id in repeated:
        n = n + 1 if request_id == previous else 0
        previous = request_id
        if n:
            bind.execute(
                sa.text("UPDATE usage_records SET request_id = :r WHERE id = :i"),
                {"r": f"{request_id[:56]}-dup{n}", "i": row_id},
            )
    op.drop_index("ix_usage_records_request_id", table_name="usage_records")
    op.create_index("ix_usage_records_request_id", "usage_records", ["request_id"], unique=True)
    op.create_index("ix_usage_key_created", "usage_records", ["api_key_id", "created_at"])

    op.create_table(
        "model_prices",
        sa.Column("model_id", sa.String(length=256), nullable=False),
        *(
            sa.Column(name, sa.BigInteger(), nullable=True)
            for name in (
                "input",
                "cached_input",
                "output",
                "reasoning",
                "embedding",
                "per_page",
                "per_call",
            )
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("model_id"),
    )
    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("amount_nanos", sa.BigInteger(), nullable=True),
        sa.Column("tokens", sa.BigInteger(), nullable=True),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("warn_at", sa.Float(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scope", "subject_id", name="uq_budgets_subject"),
    )
    op.create_table(
        "budget_daily",
        sa.Column("budget_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("cost_nanos", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("budget_id", "day"),
    )
    op.create_table(
        "rate_limits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.BigInteger(), nullable=True),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scope", "subject_id", "model", name="uq_rate_limits_subject"),
    )
    op.create_table(
        "group_admins",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "user_id"),
    )
    op.create_index("ix_group_admins_user_id", "group_admins", ["user_id"])
    op.create_table(
        "budget_alerts",
        sa.Column("budget_id", sa.Integer(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("budget_id", "period_start", "kind"),
    )
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_notices_user_created", "notices", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_notices_user_created", table_name="notices")
    op.drop_table("notices")
    op.drop_table("budget_alerts")
    op.drop_index("ix_group_admins_user_id", table_name="group_admins")
    op.drop_table("group_admins")
    op.drop_table("rate_limits")
    op.drop_table("budget_daily")
    op.drop_table("budgets")
    op.drop_table("model_prices")
    op.drop_index("ix_usage_key_created", table_name="usage_records")
    op.drop_index("ix_usage_records_request_id", table_name="usage_records")
    op.create_index("ix_usage_records_request_id", "usage_records", ["request_id"])
    with op.batch_alter_table("usage_daily", schema=None) as batch_op:
        batch_op.drop_column("cost_nanos")
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_column("client_request_id")
        batch_op.drop_column("budgets")
        batch_op.drop_column("cost_nanos")
