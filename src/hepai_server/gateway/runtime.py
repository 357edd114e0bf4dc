"""Gateway: the services one server process runs, built at startup and closed at shutdown."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from hepai_server import __version__
from hepai_server.accounts import Caller, find_caller
from hepai_server.config import Settings
from hepai_server.db.engine import make_engine
from hepai_server.gateway.auth import Authenticator
from hepai_server.gateway.catalog import Catalog
from hepai_server.gateway.proxy import Proxy
from hepai_server.gateway.usage import UsageRecorder
from hepai_server.invalidation import Generation

T = TypeVar("T")


@dataclass(slots=True)
class Gateway:
    settings: Settings
    catalog: Catalog
    engine: Engine
    generation: Generation
    auth: Authenticator
    recorder: UsageRecorder
    session: aiohttp.ClientSession
    proxy: Proxy

    @classmethod
    async def start(cls, settings: Settings, catalog: Catalog) -> Gateway:
        engine = make_engine(settings.sqlalchemy_url)

        def lookup(key_hash: str) -> Caller | None:
            with Session(engine) as session:
                return find_caller(session, key_hash)

        generation = Generation(settings.data_dir / "auth.generation")
        recorder = UsageRecorder(
            engine, flush_seconds=settings.usage_flush_seconds, batch_size=settings.usage_batch_size
        )
        recorder.start()
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=settings.upstream_max_connections, limit_per_host=0, ttl_dns_cache=300
            ),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=settings.upstream_connect_timeout,
                sock_read=settings.upstream_read_timeout,
            ),
            headers={"user-agent": f"hepai-server/{__version__}"},
        )
        return cls(
            settings=settings,
            catalog=catalog,
            engine=engine,
            generation=generation,
            auth=Authenticator(lookup, generation, ttl=settings.auth_cache_seconds),
            recorder=recorder,
            session=session,
            proxy=Proxy(session, recorder, random.Random()),
        )

    async def transact(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a thread with a session that commits when it returns."""

        def run() -> T:
            with Session(self.engine, expire_on_commit=False) as session:
                result = work(session)
                session.commit()
                return result

        return await asyncio.to_thread(run)

    async def close(self) -> None:
        """Stop in dependency order: no new upstream calls, then drain usage, then the database."""
        await self.session.close()
        await self.recorder.close()
        self.engine.dispose()
        self.generation.close()
