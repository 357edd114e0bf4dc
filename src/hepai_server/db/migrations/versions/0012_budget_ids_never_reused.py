"""Budget ids are never reused: a budget's spend (``budget_daily``), its alerts and its live
counters are keyed by its id, so on SQLite, which hands a deleted row's id to the next row, a
budget set after another was cleared started with the cleared one's spend and alerts.
PostgreSQL's sequences never reuse an id; on SQLite the table becomes AUTOINCREMENT, its
counter starting past every id the spend and alerts still name.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-09 10:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "budgets", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ):
        pass
    op.execute("DELETE FROM sqlite_sequence WHERE name = 'budgets'")
    op.execute(
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'budgets', coalesce(max(id), 0) FROM ("
        "SELECT max(id) AS id FROM budgets UNION ALL SELECT max(budget_id) FROM budget_daily "
        "UNION ALL SELECT max(budget_id) FROM budget_alerts)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "budgets", recreate="always", table_kwargs={"sqlite_autoincrement": False}
    ):
        pass
