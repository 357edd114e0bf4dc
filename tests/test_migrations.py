"""Migrations keep what the database holds, and the tables they make are the ones the code
declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

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
