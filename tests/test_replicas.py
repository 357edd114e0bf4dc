"""Three gateway replicas on one PostgreSQL database and one Redis, each with a data directory of
its own (as on three machines: no generation file is shared), called round-robin: the limits
are global, exactly; a burst against a budget overshoots by at most one request; a revoked key
and a changed limit reach every replica within a second; Redis stopping is answered as the
settings say (503 by default), and its return needs no restart."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import POSTGRES_ADMIN_URL
from tests.redisserver import RedisServer, redis_server
from tests.stack import Platform, Server

REPLICAS = 3
#: Several servers on PostgreSQL: what only processes and the real database prove.
pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"hepai_replicas_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def machines(
    tmp_path_factory: pytest.TempPathFactory,
    providers_file: Path,
    database: str,
    redis: RedisServer,
) -> list[Platform]:
    shared = {
        "HEPAI_SERVER_REDIS_URL": redis.url,
        "HEPAI_SERVER_SECRET_KEY": secrets.token_hex(32),
        # Far longer than the test: only Redis can carry a change between machines in time.
        "HEPAI_SERVER_AUTH_CACHE_SECONDS": "300",
        "HEPAI_SERVER_CATALOG_REFRESH_SECONDS": "300",
    }
    platforms = [
        Platform(
            data_dir=tmp_path_factory.mktemp(f"machine-{n}"),
            database_url=database,
            config=providers_file,
            extra_env=shared,
        )
        for n in range(REPLICAS)
    ]
    platforms[0].cli("db", "upgrade")
    return platforms


@pytest.fixture(scope="module")
def replicas(machines: list[Platform]) -> Iterator[list[Server]]:
    with ExitStack() as stack:
        yield [stack.enter_context(platform.serve()) for platform in machines]


class RoundRobin:
    def __init__(self, servers: list[Server], key: str) -> None:
        self._next = itertools.cycle(servers)
        self.key = key

    def chat(self, **extra: Any) -> httpx.Response:
        server = next(self._next)
        body = {"model": "mock/chat", "messages": [{"role": "user", "content": "hi"}], **extra}
        return httpx.post(
            f"{server.base_url}/chat/completions",
            headers={"authorization": f"Bearer {self.key}"},
            json=body,
            timeout=30,
        )


def in_force(servers: list[Server], key: str, what: str) -> None:
    deadline = time.monotonic() + 5
    for server in servers:
        while not httpx.get(
            f"{server.base_url}/billing/limits", headers={"authorization": f"Bearer {key}"}
        ).json()[what]:
            assert time.monotonic() < deadline, f"{what} never reached {server.url}"
            time.sleep(0.05)


def test_a_rate_limit_is_global_across_replicas(
    machines: list[Platform], replicas: list[Server], unique
) -> None:
    user = unique("global")
    key = machines[0].create_user(user)
    machines[0].cli("limit", "set", "--user", user, "--rpm", "6")
    in_force(replicas, key, "rate_limits")
    calls = RoundRobin(replicas, key)
    first = calls.chat()
    assert first.status_code == 200, first.text
    reset = first.headers["x-ratelimit-reset-requests"]
    if not reset.endswith("m0s") and float(reset.rstrip("ms").split("m")[-1] or 0) < 5:
        time.sleep(6)  # too close to the window's end: the next window, from its start
        first = calls.chat()
    statuses = [first.status_code] + [calls.chat().status_code for _ in range(8)]
    assert statuses.count(200) == 6 and statuses[6:] == [429, 429, 429], statuses


def test_a_burst_across_replicas_overshoots_a_budget_by_at_most_one(
    machines: list[Platform], replicas: list[Server], unique
) -> None:
    user = unique("burst")
    key = machines[0].create_user(user)
    machines[0].cli("price", "set", "mock/rerank", "--per-call", "1")
    machines[0].cli("budget", "set", "--user", user, "--amount", "10")
    in_force(replicas, key, "budgets")

    async def burst() -> list[int]:
        async with httpx.AsyncClient(
            headers={"authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            body = {
                "model": "mock/rerank",
                "query": "q",
                "documents": ["a"],
                "mock": {"delay": 0.2},
            }
            answers = await asyncio.gather(
                *(
                    client.post(f"{replicas[n % REPLICAS].base_url}/rerank", json=body)
                    for n in range(50)
                )
            )
            return [answer.status_code for answer in answers]

    statuses = asyncio.run(burst())
    assert 10 <= statuses.count(200) <= 11 and statuses.count(429) == 50 - statuses.count(200)
    machines[0].cli("price", "clear", "mock/rerank")


def test_a_revoked_key_and_a_new_limit_reach_every_replica_within_a_second(
    machines: list[Platform], replicas: list[Server], unique
) -> None:
    user = unique("revoked")
    key = machines[0].create_user(user)
    calls = RoundRobin(replicas, key)
    assert [calls.chat().status_code for _ in range(REPLICAS)] == [200] * REPLICAS  # cached
    # A limit of no requests at all, set on one machine, holds on the others within a second.
    machines[1].cli("limit", "set", "--user", user, "--rpm", "0")
    time.sleep(1.0)
    assert [calls.chat().status_code for _ in range(REPLICAS)] == [429] * REPLICAS
    machines[1].cli("limit", "clear", "--user", user)
    time.sleep(1.0)
    assert [calls.chat().status_code for _ in range(REPLICAS)] == [200] * REPLICAS
    # Revoked through one replica's API: the other two drop their cached key within a second.
    key_id = machines[0].key_id(key)
    revoked = httpx.post(
        f"{replicas[0].base_url}/key/delete_api_key",
        headers={"authorization": f"Bearer {key}"},
        json={"api_key_id": str(key_id)},
    )
    assert revoked.status_code == 200
    time.sleep(1.0)
    assert [calls.chat().status_code for _ in range(REPLICAS)] == [401] * REPLICAS


def test_without_redis_limited_calls_answer_503_and_recover_when_it_returns(
    machines: list[Platform], replicas: list[Server], redis: RedisServer, unique
) -> None:
    user = unique("redisless")
    key = machines[0].create_user(user)
    free = machines[0].create_user(unique("unlimited"))
    machines[0].cli("limit", "set", "--user", user, "--rpm", "1000")
    in_force(replicas, key, "rate_limits")
    port = redis.port
    redis.stop()
    try:
        answer = RoundRobin(replicas, key).chat()
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        # A caller no limit applies to needs no counters.
        assert RoundRobin(replicas, free).chat().status_code == 200
    finally:
        restarted = redis.restart(port)
    deadline = time.monotonic() + 10
    calls = RoundRobin(replicas, key)
    while calls.chat().status_code != 200:
        assert time.monotonic() < deadline, "the replicas never used Redis again"
        time.sleep(0.2)
    assert restarted.process.poll() is None
