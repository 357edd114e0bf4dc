"""open_index(settings, engine): the chunk index the settings choose.

``knowledge_store``: ``sqlite`` is the embedded file in the data directory; ``pgvector`` the
platform's PostgreSQL (the extension must be installable there); ``auto`` takes pgvector when
the platform's database is PostgreSQL and offers the extension, and the SQLite file otherwise
(with a warning on PostgreSQL: each machine then keeps knowledge bases of its own).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import Engine

from hepai_server.config import Settings
from hepai_server.knowledge.index import ChunkIndex
from hepai_server.knowledge.pgvector_index import PgvectorIndex
from hepai_server.knowledge.sqlite_index import SqliteIndex

log = logging.getLogger(__name__)


def has_pgvector(engine: Engine) -> bool:
    with engine.connect() as connection:
        found = connection.exec_driver_sql(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
        ).first()
    return found is not None


async def open_index(settings: Settings, engine: Engine) -> ChunkIndex:
    """The index, prepared (its tables made if they were missing)."""
    choice = settings.knowledge_store
    postgres = engine.dialect.name == "postgresql"
    if choice == "auto":
        available = postgres and await asyncio.to_thread(has_pgvector, engine)
        choice = "pgvector" if available else "sqlite"
        if postgres and not available:
            log.warning(
                "PostgreSQL has no pgvector: knowledge bases are indexed in %s, on this "
                "machine only; install pgvector for several replicas",
                settings.data_dir / "knowledge.db",
            )
    if choice == "pgvector" and not postgres:
        raise ValueError("HEPAI_SERVER_KNOWLEDGE_STORE=pgvector needs a PostgreSQL database_url")
    index: ChunkIndex = (
        PgvectorIndex(engine)
        if choice == "pgvector"
        else SqliteIndex(settings.data_dir / "knowledge.db")
    )
    await index.prepare()
    return index
