"""Gateway: the services one server process runs, built at startup and closed at shutdown."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from hepai_server import __version__
from hepai_server.config import ProviderConfig, Settings, metrics_dir
from hepai_server.db.engine import Limits, answering, make_engine, transact
from hepai_server.errors import StorageUnavailable
from hepai_server.files.grant import FileGrants
from hepai_server.files.service import FileService
from hepai_server.files.storage import open_storage
from hepai_server.files.uploads import UploadService
from hepai_server.gateway.alerts import Alerts, Mailer
from hepai_server.gateway.auth import Authenticator
from hepai_server.gateway.catalog import Catalog
from hepai_server.gateway.dispatch import Dispatcher, WorkerSessions
from hepai_server.gateway.health import Health
from hepai_server.gateway.ledger import Journal
from hepai_server.gateway.limiter import Limiter
from hepai_server.gateway.meter import Meter
from hepai_server.gateway.probes import HealthChecks
from hepai_server.gateway.proxy import Proxy
from hepai_server.gateway.resilience import Breaker, RetryBudget
from hepai_server.gateway.routing import Occupancy
from hepai_server.gateway.toolcache import ToolCache
from hepai_server.gateway.upstream import Upstreams
from hepai_server.gateway.usage import UsageRecorder
from hepai_server.governance import store
from hepai_server.jobs.runner import open_runner
from hepai_server.knowledge.engines import open_index
from hepai_server.knowledge.service import KnowledgeService
from hepai_server.security.credentials import Sealer, signing_secret
from hepai_server.security.egress import EgressPolicy, SocketFactory
from hepai_server.security.names import claim_key
from hepai_server.services import providers, responses
from hepai_server.services.accounts import Caller, find_caller
from hepai_server.services.throttle import Throttle
from hepai_server.state.changes import CALLERS, CATALOG, Publisher
from hepai_server.state.counters import Counters, MemoryCounters
from hepai_server.state.generation import Generation
from hepai_server.state.redis_counters import RedisCounters
from hepai_server.telemetry.metrics import Metrics
from hepai_server.telemetry.tracing import Tracing

if TYPE_CHECKING:
    from hepai_server.gateway.batches import Batches

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(slots=True)
class Gateway:
    settings: Settings
    #: The providers' models: rebuilt when an admin changes providers or permissions.
    catalog: Catalog
    #: The config file's providers, the part of the catalog no admin action changes.
    config_providers: list[ProviderConfig]
    engine: Engine
    generation: Generation
    #: Bumped when stored providers or model permissions change (``reload_catalog``).
    catalog_generation: Generation
    sealer: Sealer
    auth: Authenticator
    recorder: UsageRecorder
    session: aiohttp.ClientSession
    proxy: Proxy
    #: Every call to a worker: the unified gate, worker models, management calls.
    dispatcher: Dispatcher
    files: FileService
    uploads: UploadService
    grants: FileGrants
    #: Password guesses, counted for the portal's sign-in and the API's password check alike.
    throttle: Throttle
    #: The claim keys of the built-in tools' model names, which only admins may claim.
    builtin_name_keys: frozenset[str]
    #: Budgets and rate limits, and the prices usage rows are costed at.
    limiter: Limiter
    counters: Counters
    #: Changes told to every replica through Redis, when several share it.
    broadcast: Publisher | None
    upstreams: Upstreams
    probes: HealthChecks
    sweeper: asyncio.Task[None]
    #: Readiness, and whether SIGTERM began draining this process.
    health: Health
    #: The Prometheus series, fed by the meter from every request's usage row.
    metrics: Metrics
    meter: Meter
    #: Workers' functions and external MCP servers' tools, as the MCP endpoint lists them.
    tools: ToolCache
    #: Spans to the OTLP endpoint, when one is configured.
    tracing: Tracing | None = None
    refresher: asyncio.Task[None] | None = None
    #: When this process started: the ``created`` of its catalog's models.
    started: int = field(default_factory=lambda: int(time.time()))
    #: Knowledge bases (vector stores): built once the rest is, since their tools call it.
    knowledge: KnowledgeService = field(init=False)
    #: The Batch API (gateway/batches.py), on the same job runner as ingestion.
    batches: Batches = field(init=False)

    @classmethod
    async def start(cls, settings: Settings, config_providers: list[ProviderConfig]) -> Gateway:
        limits = database_limits(settings)
        engine = make_engine(settings.sqlalchemy_url, limits)
        sealer = Sealer(signing_secret(settings))

        def lookup(key_hash: str) -> Caller | None:
            with answering(), Session(engine) as session:
                return find_caller(session, key_hash)

        generation = Generation(settings.data_dir / "auth.generation")
        ledger = settings.data_dir / "ledger"
        recorder = UsageRecorder(
            engine,
            Journal(ledger),
            flush_seconds=settings.usage_flush_seconds,
            batch_size=settings.usage_batch_size,
            budget_zone=settings.budget_zone,
        )
        try:
            await asyncio.to_thread(recorder.replay, ledger)
        except Exception:
            log.exception(
                "replaying the journals of stopped processes failed; the next start tries"
            )
        recorder.start()
        session = upstream_session(settings)
        counters: Counters = MemoryCounters()
        if settings.redis_url:
            counters = RedisCounters(settings.redis_url)
        alerts = Alerts(
            engine,
            session,
            webhook_url=settings.alert_webhook_url,
            webhook_format=settings.alert_webhook_format,
            currency=settings.currency,
            mailer=Mailer(
                settings.smtp_host,
                settings.smtp_port,
                sender=settings.smtp_from,
                username=settings.smtp_username,
                password=settings.smtp_password.get_secret_value()
                if settings.smtp_password
                else None,
                starttls=settings.smtp_starttls,
            )
            if settings.smtp_host
            else None,
        )
        policy = EgressPolicy.from_strings(settings.worker_allowed_networks)
        workers = WorkerSessions(partial(upstream_session, settings), policy)
        grants = FileGrants(signing_secret(settings), ttl=settings.file_grant_seconds)
        occupancy, rng = Occupancy(), random.Random()
        breaker = Breaker(
            failures=settings.breaker_failures,
            window=settings.breaker_window_seconds,
            cooldown=settings.breaker_cooldown_seconds,
        )
        catalog = Catalog.from_providers(config_providers)
        upstreams = Upstreams(
            session,
            workers,
            occupancy,
            rng,
            breaker=breaker,
            budget=RetryBudget(
                ratio=settings.retry_budget_ratio, per_second=settings.retry_budget_per_second
            ),
            catalog=catalog,
        )
        files = FileService(settings, engine, open_storage(settings))
        try:
            await files.storage.prepare()
        except StorageUnavailable:
            # The models must not go down with the file store: file calls answer 503 until
            # it is back, and the cause is in the log above.
            log.error("the file store is not ready; file uploads and downloads will fail")
        auth = Authenticator(lookup, generation, ttl=settings.auth_cache_seconds)
        health = Health(
            probe=make_engine(settings.sqlalchemy_url, limits, pooled=False),
            redis_url=settings.redis_url,
        )
        metrics = Metrics(metrics_dir())
        meter = Meter(
            metrics,
            engine=engine,
            recorder=recorder,
            auth=auth,
            occupancy=occupancy,
            health=health,
        )
        meter.start()
        gateway = cls(
            settings=settings,
            catalog=catalog,
            config_providers=config_providers,
            engine=engine,
            generation=generation,
            catalog_generation=Generation(settings.data_dir / "catalog.generation"),
            sealer=sealer,
            auth=auth,
            recorder=recorder,
            session=session,
            proxy=Proxy(upstreams),
            dispatcher=Dispatcher(
                sessions=workers,
                policy=policy,
                engine=engine,
                grants=grants,
                occupancy=occupancy,
                rng=rng,
                expiry=settings.worker_expiry_seconds,
            ),
            files=files,
            uploads=UploadService(files),
            grants=grants,
            builtin_name_keys=frozenset(
                claim_key(name)
                for name in (
                    settings.markitdown_model_name,
                    settings.mineru_model_name,
                    settings.embedding_model_name,
                    settings.rerank_model_name,
                )
            ),
            throttle=Throttle(
                per_username=settings.login_max_failures,
                per_ip=settings.login_max_failures_per_ip,
                window=timedelta(seconds=settings.login_failure_window_seconds),
            ),
            limiter=Limiter(
                counters,
                engine=engine,
                zone=settings.budget_zone,
                reservation_ttl=settings.limits_reservation_seconds,
                redis_failure=settings.limits_redis_failure,
                replicas=settings.limits_replicas,
                on_threshold=alerts.on_threshold,
            ),
            counters=counters,
            broadcast=None,
            upstreams=upstreams,
            probes=HealthChecks(
                session,
                engine,
                breaker,
                catalog,
                every=settings.health_check_seconds,
            ),
            sweeper=asyncio.create_task(sweep(files, engine, settings.file_sweep_seconds)),
            tools=ToolCache(settings.mcp_tools_cache_seconds),
            health=health,
            metrics=metrics,
            meter=meter,
            tracing=(
                Tracing(settings.otlp_endpoint, settings.otel_service_name, __version__)
                if settings.otlp_endpoint
                else None
            ),
        )
        gateway.probes.start()
        if settings.redis_url:
            from hepai_server.state.broadcast import Broadcast

            gateway.broadcast = Broadcast(settings.redis_url, gateway.heard)
            gateway.broadcast.start()
        await gateway.start_jobs()
        # Read before loading: a change made while this process loads is then seen as one.
        seen = gateway.catalog_generation.read()
        try:
            await gateway.reload_catalog()
        except Exception:
            # The config file's models are served regardless; the refresher tries again.
            log.exception("loading the providers added in the portal failed")
        gateway.refresher = asyncio.create_task(
            refresh(gateway, settings.catalog_refresh_seconds, seen)
        )
        return gateway

    async def start_jobs(self) -> None:
        """The job runner, and the services whose background work it runs: the knowledge
        service (its chunk index, ingesting its files) and the Batch API. The knowledge
        service closes the runner when it closes.

        Both call back into this gateway (the dispatcher, the proxy, the recorder), so the
        modules that make them are imported here, once the gateway exists.
        """
        from hepai_server.gateway.batches import Batches
        from hepai_server.gateway.knowledge_tools import PlatformTools

        settings = self.settings
        runner = open_runner(settings)
        self.knowledge = KnowledgeService(
            settings=settings,
            engine=self.engine,
            index=await open_index(settings, self.engine),
            tools=PlatformTools(self),
            runner=runner,
        )
        self.batches = Batches(self, runner)
        await runner.start()

    async def reload_catalog(self) -> None:
        """Rebuild the catalog from the config file's providers and the stored ones, and the
        prices, budgets and rate limits with it."""
        configured = store.config_prices(self.config_providers)

        def work(session: Session) -> tuple[Any, ...]:
            return (
                providers.stored_providers(session, self.sealer),
                providers.permissions(session),
                store.load_prices(session, configured),
                store.load_rules(session, self.settings),
            )

        stored, access, prices, rules = await self.transact(work)
        self.catalog = Catalog.from_providers(
            [*self.config_providers, *stored], access=access, created=self.started
        )
        self.upstreams.catalog = self.probes.catalog = self.catalog
        self.limiter.prices, self.limiter.rules = prices, rules

    async def catalog_changed(self) -> None:
        """Tell every process (this machine's through the generation file, other machines'
        through Redis) to rebuild its catalog, prices and limits (after committing)."""
        self.catalog_generation.bump()
        if self.broadcast is not None:
            await self.broadcast.publish(CATALOG)

    async def callers_changed(self) -> None:
        """Tell every process that keys, users or groups changed (after committing): cached
        callers are dropped before the next request."""
        self.generation.bump()
        if self.broadcast is not None:
            await self.broadcast.publish(CALLERS)

    def heard(self, change: str) -> None:
        """A change another replica published."""
        if change == CALLERS:
            self.auth.forget()
        elif change == CATALOG:
            self.catalog_generation.bump()  # the refresher rebuilds within half a second

    async def transact(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a thread with a session that commits when it returns."""
        return await transact(self.engine, work)

    async def close(self) -> None:
        """Stop in dependency order: no new jobs or upstream calls, then drain usage, then the
        database."""
        self.sweeper.cancel()
        await self.knowledge.close()
        if self.refresher is not None:
            self.refresher.cancel()
        await self.probes.close()
        if self.broadcast is not None:
            await self.broadcast.close()
        await self.limiter.drain()
        await self.counters.close()
        await self.session.close()
        await self.dispatcher.sessions.close()
        await self.recorder.close()
        await self.meter.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.close)
        await self.files.storage.close()
        self.engine.dispose()
        self.health.close()
        self.generation.close()
        self.catalog_generation.close()


def database_limits(settings: Settings) -> Limits:
    return Limits(
        connect=settings.database_connect_timeout,
        statement=settings.database_statement_timeout,
        pool=settings.database_pool_timeout,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
    )


def upstream_session(
    settings: Settings, socket_factory: SocketFactory | None = None
) -> aiohttp.ClientSession:
    """A pool of connections to upstreams, with the configured timeouts (and for workers, the
    egress guard's check of every connection it opens)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=settings.upstream_max_connections,
            limit_per_host=0,
            ttl_dns_cache=300,
            socket_factory=socket_factory,
        ),
        timeout=aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.upstream_connect_timeout,
            sock_read=settings.upstream_read_timeout,
        ),
        headers={"user-agent": f"hepai-server/{__version__}"},
    )


async def sweep(files: FileService, engine: Engine, every: float) -> None:
    """Delete expired files, abandoned uploads and stored responses past their retention, now
    and then, for as long as the server runs."""
    while True:
        try:
            removed, expired = await files.purge_expired()
            if removed or expired:
                log.info("removed %d expired files and %d abandoned uploads", removed, expired)
            purge = partial(responses.purge_expired, now=datetime.now(UTC))
            if purged := await transact(engine, purge):
                log.info("removed %d stored responses past their retention", purged)
        except Exception:
            log.warning("sweeping expired files failed; trying again later", exc_info=True)
        await asyncio.sleep(every)


async def refresh(gateway: Gateway, every: float, seen: int) -> None:
    """Rebuild the catalog soon after this machine's generation moves past ``seen``, and every
    ``every`` seconds regardless (changes made on other machines)."""
    due = asyncio.get_running_loop().time() + every
    while True:
        await asyncio.sleep(0.5)
        current, now = gateway.catalog_generation.read(), asyncio.get_running_loop().time()
        if current == seen and now < due:
            continue
        try:
            await gateway.reload_catalog()
            if current != seen:
                log.info("model catalog rebuilt: %d models", len(gateway.catalog.ids()))
            seen, due = current, now + every
        except Exception:
            log.warning("rebuilding the model catalog failed; keeping the last one", exc_info=True)
            due = now + every
