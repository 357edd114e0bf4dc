"""Fixtures for the two tiers of tests, and the markers that keep them apart.

Where a new test goes:

- **In process** (the fast tier, the default choice): routes, contracts, validation, error
  bodies, usage rows. The app is `create_app(settings)` behind `httpx.ASGITransport` with its
  lifespan run, the mock upstreams listen on loopback ports in the test's own event loop, and
  accounts are made through `services.accounts`. Write ``async def test_…`` (anyio runs it)
  and use `app`, `client` (httpx), `api` (the official openai client), `account`, `make_user`,
  `upstream`, `failing_upstream` and `settings`; `tests.portal.AppVisitor` for the portal's
  pages and forms; `tests.inprocess.running(prepare(settings.model_copy(update=…)))` for an
  app with settings of its own. Pure functions and services need no app at all.
- **End to end** (marker ``e2e``): what only real processes prove: real clients over real
  sockets (streams, the hepai SDK's workers, uvicorn's limits), the CLI as a subprocess, several
  server processes, signals and kill -9. Use `platform`, `server`, `mock`, `failing_mock`,
  `user_key`, `operator` (tests/stack.py). `platform` is SQLite unless the test is marked
  ``both_databases``: do that only where the database can differ (migrations, concurrency and
  locking, the usage writer, permission queries); the PostgreSQL variant is marked ``postgres``.
- **Browser** (marker ``browser``): pages in headless Chromium, through the `browser` fixture.

The markers ``e2e``, ``postgres`` and ``browser`` are set here from the fixtures a test uses,
so a test that uses these fixtures lands in its tier by itself; one that starts processes or
a database some other way marks itself (``pytestmark = [pytest.mark.e2e, …]``). Then
`pytest -m "not e2e and not browser and not postgres"` (`bash scripts/test.sh --fast`) needs
neither PostgreSQL nor Chromium nor a server process.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import psycopg
import pytest

from hepai_server.config import Settings
from hepai_server.db import migrate
from hepai_server.testing.mock_upstream import MockUpstream
from tests.inprocess import Account, App, Upstream, prepare, running, serve_upstream
from tests.providers import write_providers
from tests.stack import UPSTREAM_KEY, MockProcess, Platform, Server, free_port, mock_upstream

if TYPE_CHECKING:
    from playwright.sync_api import Browser

POSTGRES_ADMIN_URL = os.environ.get(
    "HEPAI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
#: The databases a `platform` can run on; the first is every test's, the rest only
#: ``both_databases`` tests'.
DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
#: Fixtures that start processes: a test that uses one (directly or through another) is e2e.
PROCESS_FIXTURES = frozenset({"platform", "mock", "failing_mock", "postgres_url"})
_names = itertools.count()


# --- tiers ---------------------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run `platform` on SQLite, and on PostgreSQL too for tests marked ``both_databases``."""
    if "platform_database" in metafunc.fixturenames:
        both = metafunc.definition.get_closest_marker("both_databases") is not None
        metafunc.parametrize(
            "platform_database",
            DATABASES if both else DATABASES[:1],
            indirect=True,
            scope="session",
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the tier its fixtures put it in."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & PROCESS_FIXTURES:
            item.add_marker(pytest.mark.e2e)
        if "postgres_url" in fixtures:
            item.add_marker(pytest.mark.postgres)
        if "browser" in fixtures:
            item.add_marker(pytest.mark.browser)


# --- in process ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """One asyncio loop for the whole session, so the app and the upstreams outlive a test."""
    return "asyncio"


@pytest.fixture(scope="session")
def provider_keys() -> Iterator[None]:
    """The environment variables the providers file reads its keys from, as `serve` has them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOCK_KEY", UPSTREAM_KEY)
        patch.setenv("WRONG_KEY", "not-the-upstream-key")
        patch.delenv("HEPAI_TEST_UNSET_KEY", raising=False)
        yield


@pytest.fixture(scope="session")
async def upstream() -> AsyncIterator[Upstream]:
    """The in-process upstream most models live on; it insists on the provider key."""
    async with serve_upstream(MockUpstream(api_key=UPSTREAM_KEY)) as served:
        yield served


@pytest.fixture(scope="session")
async def failing_upstream() -> AsyncIterator[Upstream]:
    """An in-process upstream that answers every call with 500."""
    async with serve_upstream(MockUpstream(fail_status=500)) as served:
        yield served


@pytest.fixture(scope="session")
def settings(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: Upstream,
    failing_upstream: Upstream,
    provider_keys: None,
) -> Settings:
    """The in-process app's settings: a fresh SQLite database and the test providers."""
    root = tmp_path_factory.mktemp("app")
    config = write_providers(
        root / "providers.yaml",
        mock_url=upstream.url,
        failing_url=failing_upstream.url,
        dead_url=f"http://127.0.0.1:{free_port()}/v1",
    )
    return Settings(
        data_dir=root / "data",
        database_url=None,
        config=config,
        usage_flush_seconds=0.02,
        # Knowledge bases embed with the mock upstream's model: no worker to start in process.
        knowledge_embedding_model="mock/embed",
        batch_retry_seconds=0.1,
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[App]:
    """`create_app(settings)`, started once for the session (tests make their own names)."""
    async with running(prepare(settings)) as started:
        yield started


@pytest.fixture
async def client(app: App) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the in-process app (base URL http://testserver, no sockets)."""
    async with app.client() as http:
        yield http


@pytest.fixture
def make_user(app: App, unique: Callable[[str], str]) -> Callable[..., Account]:
    """``make_user(admin=…, groups=…, password=…)``: a new user with a key, on the app's
    database; the name is unique unless given (``username=``)."""

    def make(username: str | None = None, **options: Any) -> Account:
        return app.platform.make_user(username or unique("user"), **options)

    return make


@pytest.fixture(scope="session")
def account(app: App) -> Account:
    """An ordinary user of the in-process app, shared by the tests that only need to be let
    in; tests that change a key or an account make their own."""
    return app.platform.make_user(f"user-{secrets.token_hex(3)}")


@pytest.fixture
async def api(app: App, account: Account) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official openai client on the in-process app, as `account`."""
    async with app.openai(account.key) as client:
        yield client


# --- end to end ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mock() -> Iterator[MockProcess]:
    """The upstream most models live on; it insists on the provider key."""
    with mock_upstream("--api-key", UPSTREAM_KEY) as process:
        yield process


@pytest.fixture(scope="session")
def failing_mock() -> Iterator[MockProcess]:
    """An upstream that answers every call with 500."""
    with mock_upstream("--fail-status", "500") as process:
        yield process


@pytest.fixture(scope="session")
def providers_file(
    tmp_path_factory: pytest.TempPathFactory, mock: MockProcess, failing_mock: MockProcess
) -> Path:
    return write_providers(
        tmp_path_factory.mktemp("config") / "providers.yaml",
        mock_url=mock.url,
        failing_url=failing_mock.url,
        dead_url=f"http://127.0.0.1:{free_port()}/v1",  # nothing listens there
    )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    name = f"hepai_test_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    for attempt in range(10):
        try:
            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg.errors.ObjectInUse:
            # A server process of this session may still be closing its pool.
            time.sleep(0.5 * (attempt + 1))


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=[pytest.mark.e2e, pytest.mark.postgres]),
    ]
)
def migrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database, once of each kind, for a test of what a service writes in SQL
    per dialect: a SQLite file in the test's directory, then the session's PostgreSQL."""
    postgres = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    url = Settings(data_dir=tmp_path, database_url=postgres).sqlalchemy_url
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def platform_database(request: pytest.FixtureRequest) -> str:
    """The database `platform` runs on: ``sqlite``, or ``postgres`` for ``both_databases``
    tests (parametrized in `pytest_generate_tests`)."""
    return str(request.param)


@pytest.fixture(scope="session")
def platform(
    request: pytest.FixtureRequest,
    platform_database: str,
    tmp_path_factory: pytest.TempPathFactory,
    providers_file: Path,
) -> Platform:
    database_url = (
        request.getfixturevalue("postgres_url") if platform_database == "postgres" else None
    )
    data_dir = tmp_path_factory.mktemp(f"data-{platform_database}")
    platform = Platform(data_dir=data_dir, database_url=database_url, config=providers_file)
    platform.cli("db", "upgrade")
    return platform


@pytest.fixture(scope="session")
def server(platform: Platform) -> Iterator[Server]:
    with platform.serve() as running_server:
        yield running_server


#: Debian's Chromium, which scripts/setup.sh installs; Playwright never downloads a browser here.
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, one per test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave what a person may want to look at afterwards (page screenshots)."""
    root = Path(
        os.environ.get("HEPAI_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
    )
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Names no other test in the session uses (one database serves them all)."""
    return lambda stem: f"{stem}-{next(_names)}-{secrets.token_hex(2)}"


@pytest.fixture(scope="session")
def user_key(platform: Platform) -> str:
    """An API key of an ordinary user, shared by the tests that only need to be let in;
    tests that change a key or an account make their own."""
    return platform.create_user(f"user-{secrets.token_hex(3)}")


@pytest.fixture(scope="session")
def operator(platform: Platform) -> str:
    """An admin's key, which the built-in workers run with (their model names belong to it)."""
    return platform.create_user("builtin-operator", "--admin")
