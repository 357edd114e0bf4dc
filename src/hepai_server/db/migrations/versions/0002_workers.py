"""DDF workers, the models they serve, and who owns each model name.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 15:46:16.794796
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_names",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("model_names", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_names_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=512), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("speed", sa.Float(), nullable=False),
        sa.Column("queue_length", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("last_heartbeat", sa.Float(), nullable=False),
        sa.Column("stopped", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workers_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "worker_models",
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column("model_name", sa.String(length=256), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("users", sa.JSON(), nullable=False),
        sa.Column("functions", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["worker_id"], ["workers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("worker_id", "model_name"),
    )
    with op.batch_alter_table("worker_models", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_worker_models_model_name"), ["model_name"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("worker_models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_worker_models_model_name"))

    op.drop_table("worker_models")
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workers_owner_id"))

    op.drop_table("workers")
    with op.batch_alter_table("model_names", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_names_owner_id"))

    op.drop_table("model_names")
