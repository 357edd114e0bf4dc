"""The portal: web sessions, login failures, daily usage totals, the audit log, keys' last use,
workers an admin holds stopped, accounts made by single sign-on, providers added in the
portal and model permissions set there.

usage_daily is filled from the usage rows already recorded, so the usage pages show history
from the first day.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 02:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))

    # A unique index rather than a constraint: SQLite adds it without rebuilding the table.
    op.add_column("users", sa.Column("oidc_subject", sa.String(length=255), nullable=True))
    op.create_index("ix_users_oidc_subject", "users", ["oidc_subject"], unique=True)

    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_sessions_user_id"), ["user_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_web_sessions_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_failures_username"), ["username"])
        batch_op.create_index(batch_op.f("ix_login_failures_ip"), ["ip"])
        batch_op.create_index(batch_op.f("ix_login_failures_created_at"), ["created_at"])

    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("pages", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "user_id", "model"),
    )
    with op.batch_alter_table("usage_daily", schema=None) as batch_op:
        batch_op.create_index("ix_usage_daily_user_day", ["user_id", "day"], unique=False)

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_actor_id"), ["actor_id"])
        batch_op.create_index(batch_op.f("ix_audit_events_created_at"), ["created_at"])

    op.create_table(
        "providers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("preset", sa.String(length=32), nullable=True),
        sa.Column("base_url", sa.String(length=512), nullable=False),
        sa.Column("api_key_sealed", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "provider_models",
        sa.Column("provider_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.String(length=256), nullable=False),
        sa.Column("upstream", sa.String(length=256), nullable=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["provider_id"], ["providers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("provider_id", "model_id"),
    )
    op.create_table(
        "model_permissions",
        sa.Column("model_id", sa.String(length=256), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("users", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model_id"),
    )

    backfill_usage_daily()


def backfill_usage_daily() -> None:
    bind = op.get_bind()
    day = (
        "(created_at AT TIME ZONE 'UTC')::date"
        if bind.dialect.name == "postgresql"
        else "date(created_at)"
    )
    op.execute(
        f"""
        INSERT INTO usage_daily (day, user_id, model, requests, errors, prompt_tokens,
                                 completion_tokens, total_tokens, pages, bytes)
        SELECT {day}, coalesce(user_id, 0), model, count(*),
               sum(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END),
               coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),
               coalesce(sum(total_tokens), 0), coalesce(sum(pages), 0), coalesce(sum(bytes), 0)
        FROM usage_records
        GROUP BY {day}, coalesce(user_id, 0), model
        """
    )


def downgrade() -> None:
    op.drop_table("model_permissions")
    op.drop_table("provider_models")
    op.drop_table("providers")
    op.drop_table("audit_events")
    op.drop_table("usage_daily")
    op.drop_table("login_failures")
    op.drop_table("web_sessions")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("held")
    op.drop_index("ix_users_oidc_subject", table_name="users")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("oidc_subject")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
