"""A PostgreSQL database behind a fault proxy (refused, hung, slow, back): the gateway answers
503 with Retry-After within its timeouts, keeps serving the keys it knows, reports itself
unready, comes back by itself, and writes every usage row once the database answers."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from tests.conftest import POSTGRES_ADMIN_URL
from tests.faultproxy import FaultProxy, fault_proxy
from tests.stack import Platform, Server, our_worker

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

#: Short timeouts, so each fault shows within seconds; every call below has a client timeout
#: well above what these allow, and fails the test if the gateway waits past it.
FAST = {
    "HEPAI_SERVER_DATABASE_CONNECT_TIMEOUT": "2",
    "HEPAI_SERVER_DATABASE_STATEMENT_TIMEOUT": "2",
    "HEPAI_SERVER_DATABASE_POOL_TIMEOUT": "1",
    "HEPAI_SERVER_AUTH_CACHE_SECONDS": "1",
    "HEPAI_SERVER_LOG_FORMAT": "json",
}
#: connect (2) + statement and cut (3) + pool (1), with room for a loaded machine.
CLIENT_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"hepai_faults_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def proxy() -> Iterator[FaultProxy]:
    address = POSTGRES_ADMIN_URL.split("@", 1)[1].split("/", 1)[0]
    host, _, port = address.partition(":")
    with fault_proxy(host, int(port or 5432)) as running:
        yield running


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, providers_file: Path, database: str, proxy: FaultProxy
) -> Platform:
    user = POSTGRES_ADMIN_URL.split("://", 1)[1].split("@", 1)[0]
    platform = Platform(
        data_dir=tmp_path_factory.mktemp("faults"),
        database_url=f"postgresql://{user}@127.0.0.1:{proxy.port}/{database}",
        config=providers_file,
        extra_env=FAST,
    )
    platform.cli("db", "upgrade")
    return platform


@pytest.fixture(scope="module")
def server(platform: Platform) -> Iterator[Server]:
    with platform.serve() as running:
        yield running


@pytest.fixture
def recovered(proxy: FaultProxy, server: Server) -> Iterator[None]:
    """Each test starts and ends with the database answering."""
    yield
    proxy.recover()
    wait_ready(server)


def wait_ready(server: Server, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if httpx.get(server.url + "/health/ready", timeout=CLIENT_TIMEOUT).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError("the gateway never became ready again")


def chat(server: Server, key: str) -> httpx.Response:
    return httpx.post(
        server.base_url + "/chat/completions",
        json={"model": "mock/chat", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}"},
        timeout=CLIENT_TIMEOUT,
    )


def list_files(server: Server, key: str) -> httpx.Response:
    return httpx.get(
        server.base_url + "/files",
        headers={"authorization": f"Bearer {key}"},
        timeout=CLIENT_TIMEOUT,
    )


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body: dict[str, Any] = response.json()
    assert body["error"]["type"] == "service_unavailable"
    assert body["error"]["code"] == "database_unavailable"
    assert response.headers["retry-after"] == "5"
    assert response.headers["x-request-id"]


def assert_unready(server: Server) -> None:
    response = httpx.get(server.url + "/health/ready", timeout=CLIENT_TIMEOUT)
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] != "ok"
    assert checks["draining"] == "no"
    assert httpx.get(server.url + "/health/live", timeout=CLIENT_TIMEOUT).status_code == 200


def outage(
    platform: Platform, server: Server, proxy: FaultProxy, fault: str
) -> tuple[list[str], str]:
    """Call through the given fault: a known key's model calls succeed, a database route and
    an unseen key answer 503; returns the request ids of the calls that succeeded."""
    name = f"known-{secrets.token_hex(3)}"
    known = platform.create_user(name)
    unseen = platform.create_key(name)
    warm = chat(server, known)
    assert warm.status_code == 200, warm.text
    assert list_files(server, known).status_code == 200
    getattr(proxy, fault)()
    time.sleep(1.2)  # past the key cache's 1-second TTL: the key must be looked up again
    served = []
    for _ in range(3):
        response = chat(server, known)
        assert response.status_code == 200, response.text
        served.append(response.headers["x-request-id"])
    refused = list_files(server, known)
    assert_database_unavailable(refused)
    assert_logged_with_request_id(server, refused.headers["x-request-id"])
    assert_database_unavailable(chat(server, unseen))
    assert_unready(server)
    return [warm.headers["x-request-id"], *served], known


def assert_logged_with_request_id(server: Server, request_id: str) -> None:
    """The server logs JSON lines, and the refused request's warning carries its id."""
    lines = [orjson.loads(line) for line in server.logs().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    mine = [line for line in lines if line.get("request_id") == request_id]
    assert [line["level"] for line in mine] == ["warning"], mine
    assert "database did not answer" in mine[0]["message"]


@pytest.mark.parametrize("fault", ["refuse", "hang"])
def test_known_keys_keep_calling_models_and_the_rest_answers_503_until_the_database_is_back(
    platform: Platform, server: Server, proxy: FaultProxy, recovered: None, fault: str
) -> None:
    request_ids, key = outage(platform, server, proxy, fault)
    proxy.recover()
    wait_ready(server)
    assert list_files(server, key).status_code == 200
    after = chat(server, key)
    assert after.status_code == 200
    for request_id in [*request_ids, after.headers["x-request-id"]]:
        rows = platform.usage_rows(request_id, timeout=30)
        assert [row["status_code"] for row in rows] == [200], request_id


def test_a_slow_database_still_answers(
    platform: Platform, server: Server, proxy: FaultProxy, recovered: None
) -> None:
    key = platform.create_user(f"slow-{secrets.token_hex(3)}")
    proxy.slow(0.1)
    assert list_files(server, key).status_code == 200
    response = chat(server, key)
    assert response.status_code == 200
    assert platform.usage_row(response.headers["x-request-id"])["status_code"] == 200


def add(server: Server, key: str, model: str) -> httpx.Response:
    return httpx.post(
        server.base_url + "/worker/unified_gate/",
        params={"model": model, "function": "add"},
        headers={"authorization": f"Bearer {key}"},
        json={"args": [40], "kwargs": {"b": 2}},
        timeout=CLIENT_TIMEOUT,
    )


def test_known_keys_keep_calling_worker_models_while_the_database_is_away(
    platform: Platform, server: Server, proxy: FaultProxy, recovered: None
) -> None:
    owner = f"selfhost-{secrets.token_hex(3)}"
    key = platform.create_user(owner)
    model = f"{owner}/calculator"
    with our_worker(server, key, model):
        warm = add(server, key, model)
        assert warm.status_code == 200 and warm.json() == 42, warm.text
        proxy.refuse()
        time.sleep(1.2)  # past the key cache's TTL, as in the outage above
        for _ in range(3):
            during = add(server, key, model)
            assert during.status_code == 200 and during.json() == 42, during.text
        # A model this key never reached is not guessed at: the database's 503 stands.
        assert_database_unavailable(add(server, key, f"{owner}/unseen"))
        proxy.recover()
        wait_ready(server)
        assert add(server, key, model).json() == 42
