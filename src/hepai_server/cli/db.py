"""`hepai-server db`: schema migrations."""

from __future__ import annotations

import click

from hepai_server.config import Settings
from hepai_server.db import migrate


@click.group()
def db() -> None:
    """Manage the database schema."""


@db.command()
def upgrade() -> None:
    """Migrate the database to the newest schema."""
    settings = Settings()
    migrate.upgrade(settings.sqlalchemy_url)
    click.echo(f"database at revision {migrate.current(settings.sqlalchemy_url)}")
