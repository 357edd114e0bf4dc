"""Fixtures: mock upstreams, a platform per database backend, and a served gateway on each."""

from __future__ import annotations

import itertools
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.stack import MockProcess, Platform, Server, free_port, mock_upstream

POSTGRES_ADMIN_URL = os.environ.get(
    "HEPAI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
_names = itertools.count()


@pytest.fixture(scope="session")
def mock() -> Iterator[MockProcess]:
    """The upstream most models live on; it insists on the provider key."""
    from tests.stack import UPSTREAM_KEY

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
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    path = tmp_path_factory.mktemp("config") / "providers.yaml"
    path.write_text(
        f"""
providers:
  - name: mock
    base_url: {mock.url}/v1
    api_key_env: MOCK_KEY
    models:
      - {{id: mock/chat, upstream: chat-upstream}}
      - {{id: "deepseek-ai/deepseek-r1:671b", upstream: deepseek-reasoner}}
      - {{id: mock/complete, type: completion}}
      - {{id: mock/embed, type: embedding, upstream: embed-upstream}}
      - {{id: mock/rerank, type: rerank}}
      - {{id: team/physics-only, groups: [physics]}}
      - {{id: team/bob-only, groups: [], users: [bob]}}
      - {{id: failover/dead-first}}
      - {{id: failover/failing-first}}
  - name: claude-native
    base_url: {mock.url}/v1
    anthropic_base_url: {mock.url}
    api_key_env: MOCK_KEY
    models:
      - {{id: native/claude, upstream: claude-upstream}}
  - name: dead
    base_url: {dead}
    models:
      - {{id: failover/dead-first, weight: 1000000}}
      - {{id: failover/all-dead}}
  - name: failing
    base_url: {failing_mock.url}/v1
    models:
      - {{id: failover/failing-first, weight: 1000000}}
      - {{id: failover/all-failing}}
  - name: wrong-key
    base_url: {mock.url}/v1
    api_key_env: WRONG_KEY
    models:
      - {{id: broken/wrong-provider-key}}
  - name: unconfigured
    preset: openai
    api_key_env: HEPAI_TEST_UNSET_KEY
    models:
      - {{id: openai/gpt-4o}}
"""
    )
    return path


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


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def platform(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    providers_file: Path,
) -> Platform:
    database_url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    data_dir = tmp_path_factory.mktemp(f"data-{request.param}")
    platform = Platform(data_dir=data_dir, database_url=database_url, config=providers_file)
    platform.cli("db", "upgrade")
    return platform


@pytest.fixture(scope="session")
def server(platform: Platform) -> Iterator[Server]:
    with platform.serve() as running:
        yield running


#: Debian's Chromium, which scripts/setup.sh installs; Playwright never downloads a browser here.
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, one per test module."""
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
