"""`hepai-server files`: storage use per user, and the purge of expired files and uploads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import click

from hepai_server.config import Settings
from hepai_server.db import migrate
from hepai_server.db.engine import make_engine
from hepai_server.files.service import FileService
from hepai_server.files.storage import open_storage


@click.group()
def files() -> None:
    """Manage uploaded files."""


@asynccontextmanager
async def file_service() -> AsyncIterator[FileService]:
    settings = Settings()
    migrate.ensure_current(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    service = FileService(settings, engine, open_storage(settings))
    try:
        yield service
    finally:
        await service.storage.close()
        engine.dispose()


@files.command("usage")
def usage() -> None:
    """Files and bytes stored per user, largest first: id, user, files, bytes."""

    async def run() -> None:
        async with file_service() as service:
            for row in await service.storage_use():
                click.echo(f"{row.user_id}\t{row.username}\t{row.files}\t{row.bytes}")

    asyncio.run(run())


@files.command("purge")
def purge() -> None:
    """Delete expired files and abandoned uploads now (servers also do it every few minutes)."""

    async def run() -> None:
        async with file_service() as service:
            removed, expired = await service.purge_expired()
            click.echo(f"removed {removed} expired files and {expired} abandoned uploads")

    asyncio.run(run())
