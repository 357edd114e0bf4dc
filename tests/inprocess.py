"""The platform in the test's own process: `create_app(settings)` behind `httpx.ASGITransport`
with its lifespan run, mock upstreams on loopback ports in the same event loop, and accounts
made through `services.accounts` instead of the CLI.

No server process, no Python start-up, no Argon2 unless a test asks for a password: what the
in-process tier proves is everything above the socket (routes, contracts, validation, errors,
usage rows); the sockets themselves are the end-to-end tier's (tests/stack.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import openai
import sqlalchemy as sa
from aiohttp import web
from asgi_lifespan import LifespanManager
from sqlalchemy.orm import Session
from starlette.types import ASGIApp

from hepai_server.app import create_app
from hepai_server.config import Settings
from hepai_server.db import migrate
from hepai_server.db.engine import make_engine
from hepai_server.gateway.runtime import Gateway
from hepai_server.services import accounts
from hepai_server.state.generation import Generation
from hepai_server.testing.mock_upstream import MockUpstream

#: What an in-process client calls the app; no name resolution happens (ASGITransport).
BASE_URL = "http://testserver"


@dataclass
class Upstream:
    """A `MockUpstream` served on a loopback port of the test's event loop."""

    mock: MockUpstream
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        return list(self.mock.requests)

    def events(self) -> list[dict[str, Any]]:
        return list(self.mock.events)

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        return [r for r in self.mock.requests if r["body"].get("model") == model]


@asynccontextmanager
async def serve_upstream(mock: MockUpstream) -> AsyncIterator[Upstream]:
    """``mock`` listening on a free loopback port until the block ends."""
    runner = web.AppRunner(mock.app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        await web.SockSite(runner, sock).start()
        yield Upstream(mock, sock.getsockname()[1])
    finally:
        await runner.cleanup()
        sock.close()


@dataclass(frozen=True)
class Account:
    """A user made for a test, with one API key."""

    username: str
    user_id: int
    key: str
    key_id: int


@dataclass
class LocalPlatform:
    """The settings an in-process app runs with, and the database and cache it shares with
    the tests (what `tests.stack.Platform` is for the processes)."""

    settings: Settings

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session on the app's database, committed when the block ends without error."""
        engine = make_engine(self.settings.sqlalchemy_url)
        try:
            with Session(engine, expire_on_commit=False) as session, session.begin():
                yield session
        finally:
            engine.dispose()

    def make_user(
        self,
        username: str,
        *,
        admin: bool = False,
        groups: tuple[str, ...] = (),
        password: str | None = None,
        email: str | None = None,
        allowed_models: list[str] | None = None,
        expires_in: timedelta | None = None,
    ) -> Account:
        """A user and a key for it. Without a password no Argon2 hash is made (a tenth of a
        second and 64 MiB each); give one for tests that sign in."""
        with self.session() as session:
            user = accounts.create_user(
                session,
                username=username,
                password=password,
                level="admin" if admin else "user",
                groups=groups,
                email=email,
            )
            key, secret = accounts.create_api_key(
                session, user=user, allowed_models=allowed_models, expires_in=expires_in
            )
            return Account(username, user.id, secret, key.id)

    def make_key(self, username: str, **options: Any) -> tuple[int, str]:
        """Another key of an existing user: its id and its secret."""
        with self.session() as session:
            user = accounts.get_user(session, username)
            key, secret = accounts.create_api_key(session, user=user, **options)
            return key.id, secret

    def callers_changed(self) -> None:
        """What the CLI does after revoking or disabling: the app forgets its cached callers."""
        generation = Generation(self.settings.data_dir / "auth.generation")
        try:
            generation.bump()
        finally:
            generation.close()

    async def usage_rows(self, request_id: str, *, timeout: float = 10) -> list[dict[str, Any]]:
        """The usage rows of one request, once the app's batch writer has written them."""
        engine = make_engine(self.settings.sqlalchemy_url)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                with engine.connect() as connection:
                    # The platform's own id, or the one the client sent in X-Request-ID.
                    rows = connection.execute(
                        sa.text(
                            "SELECT * FROM usage_records "
                            "WHERE request_id = :r OR client_request_id = :r"
                        ),
                        {"r": request_id},
                    )
                    found = [dict(row._mapping) for row in rows]
                if found or asyncio.get_running_loop().time() > deadline:
                    return found
                await asyncio.sleep(0.02)
        finally:
            engine.dispose()

    async def usage_row(self, request_id: str) -> dict[str, Any]:
        rows = await self.usage_rows(request_id)
        assert len(rows) == 1, rows
        return rows[0]


def prepare(settings: Settings) -> LocalPlatform:
    """Migrate the settings' database, as `hepai-server serve` does before it starts."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.sqlalchemy_url)
    return LocalPlatform(settings)


@dataclass
class App:
    """A running app: the ASGI callable with its lifespan state, and the services it built."""

    asgi: ASGIApp
    gateway: Gateway
    platform: LocalPlatform

    def client(self, **options: Any) -> httpx.AsyncClient:
        """An httpx client on the app, no sockets (close it, or use it in `async with`)."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.asgi), base_url=BASE_URL, **options
        )

    def openai(self, key: str, *, prefix: str = "/apiv2", **options: Any) -> openai.AsyncOpenAI:
        """The official openai client on the app; it owns (and closes) its own httpx client."""
        return openai.AsyncOpenAI(
            base_url=BASE_URL + prefix,
            api_key=key,
            max_retries=0,
            http_client=self.client(),
            **options,
        )


@asynccontextmanager
async def running(platform: LocalPlatform) -> AsyncIterator[App]:
    """`create_app(settings)` started and, when the block ends, shut down."""
    async with LifespanManager(
        create_app(platform.settings), startup_timeout=60, shutdown_timeout=60
    ) as manager:
        state: dict[str, Any] = manager._state  # the lifespan's state, as servers pass it on
        yield App(manager.app, state["gateway"], platform)


def loopback_socket() -> socket.socket:
    """A socket bound to a free loopback port, for a server to listen on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serve_asgi(
    asgi: ASGIApp, sock: socket.socket, *, lifespan: str = "off"
) -> AsyncIterator[str]:
    """An ASGI app served on ``sock`` in the test's event loop (uvicorn); its base URL until
    the block ends."""
    import uvicorn

    config = uvicorn.Config(asgi, lifespan=lifespan, ws="none", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@asynccontextmanager
async def serve_worker(app: App, worker: Any, key: str) -> AsyncIterator[Any]:
    """A `hepai_server.worker.Worker` served on a loopback port and registered with the app
    under ``key``'s owner, as `hepai-server worker run` registers it (without heartbeats);
    deregistered and stopped when the block ends."""
    from hepai_server.worker.server import WorkerOptions, WorkerService

    sock = loopback_socket()
    options = WorkerOptions(controller=BASE_URL, api_key=key, port=sock.getsockname()[1])
    service = WorkerService(worker, options)
    auth = {"authorization": f"Bearer {key}"}
    async with serve_asgi(service.app(), sock), app.client() as client:
        answer = await client.post(
            "/apiv2/worker/register_worker",
            headers=auth,
            json={**service.info(), "secret_key": service.secret},
        )
        assert answer.status_code == 200, answer.text
        try:
            yield service
        finally:
            await client.post(
                "/apiv2/worker/stop_worker",
                headers=auth,
                json={"worker_id": service.worker_id, "permanent": False},
            )
