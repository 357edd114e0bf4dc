"""Probes: active health checks of the providers: a cheap request (their model list) on a schedule.

A provider that fails its check counts as a failure of each of its deployments (so a dead
provider is cooled down before users' calls find out), and every check's result is kept in
``provider_health`` for the admins' view: whether it answered, its status, how long it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

import aiohttp
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from hepai_server.db.engine import transact
from hepai_server.db.governance import ProviderHealth
from hepai_server.gateway.catalog import Catalog
from hepai_server.gateway.resilience import Breaker

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 10.0


class HealthChecks:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        engine: Engine,
        breaker: Breaker,
        catalog: Catalog,
        *,
        every: float,
    ) -> None:
        self._session = session
        self._engine = engine
        self._breaker = breaker
        #: The catalog in force (the gateway replaces it on every reload).
        self.catalog = catalog
        self._every = every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._every > 0:
            self._task = asyncio.create_task(self._run(), name="health-checks")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception:
                log.warning("provider health checks failed; trying again later", exc_info=True)
            await asyncio.sleep(self._every)

    async def check_all(self) -> list[ProviderHealth]:
        """Check every provider of the catalog once, at the same time; their results."""
        providers: dict[str, tuple[str, dict[str, str], list[str]]] = {}
        for model in self.catalog.models():
            for deployment in model.deployments:
                if deployment.worker_id is not None:
                    continue
                known = providers.setdefault(
                    deployment.provider, (deployment.base_url, deployment.headers, [])
                )
                known[2].append(deployment.name)
        results = await asyncio.gather(
            *(self._check(name, url, headers) for name, (url, headers, _) in providers.items())
        )
        for result in results:
            if result.down:
                for name in providers[result.provider][2]:
                    self._breaker.failed(name)
        await transact(self._engine, lambda s: _store(s, results))
        return results

    async def _check(self, provider: str, base_url: str, headers: dict[str, str]) -> ProviderHealth:
        started = time.perf_counter()
        status, detail = None, ""
        try:
            async with self._session.get(
                base_url + "/models",
                headers={k: v for k, v in headers.items() if k != "content-type"},
                timeout=aiohttp.ClientTimeout(total=CHECK_TIMEOUT),
                allow_redirects=False,
            ) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = f"unreachable: {exc.__class__.__name__}"
        down = status is None or status >= 500 or status == 429
        return ProviderHealth(
            provider=provider,
            ok=status == 200,
            down=down,
            status=status,
            latency_ms=(time.perf_counter() - started) * 1000,
            detail=detail or (f"HTTP {status}" if status is not None else ""),
            checked_at=datetime.now(UTC),
        )


def _store(session: Session, results: list[ProviderHealth]) -> None:
    for result in results:
        session.merge(result)
