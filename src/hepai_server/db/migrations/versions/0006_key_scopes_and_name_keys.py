"""Security: API keys get a scope, and model-name claims a key that makes look-alikes one name.

Keys made before scopes existed keep doing everything they did (scope ``full``). Each claim
gets the key of its name (security.names.claim_key: NFKC, case-folded, confusable characters
as their Latin look-alikes); where earlier claims are look-alikes of one another, the oldest
keeps the name and the others are released, their workers' entries with them (those workers
are refused at their next heartbeat, saying why).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hepai_server.security.names import claim_key

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column("scope", sa.String(length=16), nullable=False, server_default="full"),
    )
    op.add_column("model_names", sa.Column("key", sa.String(length=256), nullable=True))
    bind = op.get_bind()
    claims = bind.execute(
        sa.text("SELECT name FROM model_names ORDER BY created_at, name")
    ).scalars()
    taken: set[str] = set()
    for name in list(claims):
        key = claim_key(name)
        if key in taken:
            bind.execute(sa.text("DELETE FROM worker_models WHERE model_name = :n"), {"n": name})
            bind.execute(sa.text("DELETE FROM model_names WHERE name = :n"), {"n": name})
            continue
        taken.add(key)
        bind.execute(
            sa.text("UPDATE model_names SET key = :k WHERE name = :n"), {"k": key, "n": name}
        )
    with op.batch_alter_table("model_names", schema=None) as batch_op:
        batch_op.alter_column("key", existing_type=sa.String(length=256), nullable=False)
        batch_op.create_index("ix_model_names_key", ["key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("model_names", schema=None) as batch_op:
        batch_op.drop_index("ix_model_names_key")
        batch_op.drop_column("key")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("scope")
