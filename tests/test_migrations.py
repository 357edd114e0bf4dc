"""Migrations keep what the database holds, and the tables they make are the ones the code
declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.orm import Session

from hepai_server.db import migrate
from hepai_server.db.tables import Base
from tests.conftest import DATABASES, POSTGRES_ADMIN_URL

#: Rows that reference users (several with ON DELETE CASCADE), which a careless table rebuild
#: of users would take with it.
SEED = [
    "INSERT INTO users (id, username, level, disabled, created_at) "
    "VALUES (1, 'alice', 'user', false, '2026-11-01 00:00:00')",
    "INSERT INTO groups (id, name, created_at) VALUES (1, 'physics', '2026-11-01 00:00:00')",
    "INSERT INTO user_groups (user_id, group_id) VALUES (1, 1)",
    "INSERT INTO api_keys (id, user_id, name, key_hash, prefix, created_at) "
    "VALUES (1, 1, 'laptop', 'h1', 'sk-abc', '2026-11-01 00:00:00')",
    "INSERT INTO workers (id, owner_id, address, info, priority, weight, speed, queue_length, "
    "status, last_heartbeat, stopped, created_at) VALUES ('wk-1', 1, 'http://w', '{}', 0, 1, 1, "
    "0, 'ready', 0, false, '2026-11-01 00:00:00')",
    "INSERT INTO worker_models (worker_id, model_name, groups, users, functions) "
    "VALUES ('wk-1', 'alice/tool', '[]', '[]', '[]')",
    "INSERT INTO files (id, user_id, filename, purpose, bytes, content_type, sha256, "
    "storage_key, created_at) VALUES ('file-1', 1, 'a.txt', 'user_data', 1, 'text/plain', 's', "
    "'k', '2026-11-01 00:00:00')",
]
TABLES = ("users", "user_groups", "api_keys", "workers", "worker_models", "files")


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hepai.db'}"
        return
    name = f"hepai_migrate_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0]
    try:
        yield f"postgresql+psycopg://{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table: connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in TABLES
            }
    finally:
        engine.dispose()


def test_upgrading_and_downgrading_keeps_every_row(database: str) -> None:
    migrate.upgrade(database, "0004")
    engine = sa.create_engine(database)
    with engine.begin() as connection:
        for statement in SEED:
            connection.execute(sa.text(statement))
    engine.dispose()
    before = counts(database)
    assert set(before.values()) == {1}
    migrate.upgrade(database)
    assert counts(database) == before
    migrate.downgrade(database, "0004")
    assert counts(database) == before
    migrate.upgrade(database)
    assert counts(database) == before


def test_the_migrated_schema_is_the_declared_one(database: str) -> None:
    migrate.upgrade(database)
    engine = sa.create_engine(database)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": False}
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_a_budget_never_gets_the_id_of_one_cleared_before(database: str) -> None:
    """A budget's spend and alerts are kept by its id: a new budget must not inherit a cleared
    one's (SQLite hands a deleted row's id out again unless the table says AUTOINCREMENT),
    whether it was cleared before this migration or after."""
    from hepai_server.db.governance import BudgetDaily
    from hepai_server.governance import budgets

    now = datetime.now(UTC)

    def spend_and_clear(subject_id: int) -> int:
        with Session(engine) as session, session.begin():
            budget = budgets.set_budget(
                session,
                scope="user",
                subject_id=subject_id,
                amount_nanos=10,
                tokens=None,
                period="month",
                warn_at=0.8,
                now=now,
                by="test",
            )
            session.add(BudgetDaily(budget_id=budget.id, day=now.date(), requests=1, cost_nanos=9))
            budget_id = budget.id
        with Session(engine) as session, session.begin():
            budgets.clear_budget(session, scope="user", subject_id=subject_id)
        return budget_id

    migrate.upgrade(database, "0009")
    engine = sa.create_engine(database)
    try:
        before = spend_and_clear(1)
        migrate.upgrade(database)
        after = spend_and_clear(2)
        with Session(engine) as session:
            latest = budgets.set_budget(
                session,
                scope="user",
                subject_id=3,
                amount_nanos=10,
                tokens=None,
                period="month",
                warn_at=0.8,
                now=now,
                by="test",
            )
            assert budgets.spent(session, latest.id, now.date()) == (0, 0)
    finally:
        engine.dispose()
    assert before < after < latest.id


def test_upgrading_fills_the_per_model_and_weekly_totals_from_the_usage_rows(
    database: str,
) -> None:
    """Usage recorded before the per-model daily and per-user weekly totals existed is in them
    after the upgrade: UTC days, weeks from Monday, errors and every counter, and requests no
    account made under user 0."""
    from hepai_server.gateway.ledger import UsageRow
    from hepai_server.gateway.usage import insert_rows

    sunday_night = datetime(2026, 11, 29, 23, 59, 59, 500_000, tzinfo=UTC)
    monday = datetime(2026, 11, 30, tzinfo=UTC)
    wednesday = datetime(2026, 12, 2, 8, tzinfo=UTC)
    recorded = [  # (user, model, status, total tokens, pages, bytes, cost, when)
        (7, "a", 200, 10, None, None, 5, sunday_night),
        (7, "a", 500, 3, None, None, 0, monday),
        (None, "b", 200, 7, 2, None, 1, monday.replace(hour=12)),
        (7, "b", 200, None, None, 100, 2, wednesday),
    ]
    rows = [
        UsageRow(
            *(f"old-{n}", user, None, "chat.completions", model, None, False, status, None),
            *(1 if tokens else None, None, tokens, None, None, pages, size, False, 1.0, None),
            *(cost, None, None, None, when.timestamp()),
        )
        for n, (user, model, status, tokens, pages, size, cost, when) in enumerate(recorded)
    ]
    migrate.upgrade(database, "0012")
    engine = sa.create_engine(database)
    try:
        with engine.begin() as connection:
            insert_rows(connection, rows, [when for *_, when in recorded])
        migrate.upgrade(database)
        with engine.connect() as connection:
            per_model = connection.execute(
                sa.text(
                    "SELECT day, model, requests, errors, prompt_tokens, total_tokens, pages, "
                    "bytes, cost_nanos FROM usage_model_daily ORDER BY day, model"
                )
            ).all()
            weekly = connection.execute(
                sa.text(
                    "SELECT week, user_id, requests, errors, prompt_tokens, total_tokens, pages, "
                    "bytes, cost_nanos FROM usage_user_weekly ORDER BY week, user_id"
                )
            ).all()
    finally:
        engine.dispose()
    assert [(str(day), *rest) for day, *rest in per_model] == [
        ("2026-11-29", "a", 1, 0, 1, 10, 0, 0, 5),
        ("2026-11-30", "a", 1, 1, 1, 3, 0, 0, 0),
        ("2026-11-30", "b", 1, 0, 1, 7, 2, 0, 1),
        ("2026-12-02", "b", 1, 0, 0, 0, 0, 100, 2),
    ]
    assert [(str(week), *rest) for week, *rest in weekly] == [
        ("2026-11-23", 7, 1, 0, 1, 10, 0, 0, 5),
        ("2026-11-30", 0, 1, 0, 1, 7, 2, 0, 1),
        ("2026-11-30", 7, 2, 1, 1, 3, 0, 100, 2),
    ]
