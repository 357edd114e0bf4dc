"""Bring a database to the newest schema with the Alembic migrations shipped in this package."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from hepai_server.db.engine import make_engine

MIGRATIONS = Path(__file__).with_name("migrations")
#: The newest revision in migrations/versions (a test keeps the two in step), so commands can
#: see that a database is current without importing Alembic, which takes a fifth of a second.
HEAD = "0013"


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command  # only a real migration pays for Alembic's import
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    command.upgrade(config, revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    command.downgrade(config, revision)


def current(url: str) -> str | None:
    """The revision the database is at, or None before the first migration."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def ensure_current(url: str) -> None:
    """Migrate unless the database already is at HEAD."""
    if current(url) != HEAD:
        upgrade(url)
