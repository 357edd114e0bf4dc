"""The ledger loses nothing: under mixed load (plain and streamed answers, clients that leave,
upstream failures, broken streams) on two replicas, with one replica killed with SIGKILL and
PostgreSQL restarted mid-run, every request the upstream served has exactly one usage row, with
the very tokens the upstream reported, except the rows of cut answers, which are flagged
estimated; and the ledger's totals agree with its rows."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.pgcluster import Cluster, cluster
from tests.stack import MockProcess, Platform, Server

#: Real processes killed and a PostgreSQL server of the test's own restarted.
pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
KINDS = ("plain", "stream", "leave", "fail", "broken", "abandon")
#: The kinds whose answers are cut: their rows may carry estimated tokens.
CUT = {"leave", "broken", "abandon"}


@pytest.fixture(scope="module")
def database() -> Iterator[Cluster]:
    with cluster() as made:
        yield made


def body(kind: str, tag: str) -> dict[str, Any]:
    mock: dict[str, Any] = {"tag": tag}
    stream = kind in ("stream", "leave", "broken")
    if kind == "fail":
        mock["status"] = 500
    if kind == "leave":
        mock.update(chunks=20, delay=0.05)
    if kind == "broken":
        mock["break_after"] = 2
    if kind == "abandon":
        mock["delay"] = 1.0
    return {
        "model": "mock/chat",
        "messages": [{"role": "user", "content": f"count the words of {tag}"}],
        "stream": stream,
        "mock": mock,
    }


async def one(client: httpx.AsyncClient, url: str, kind: str, tag: str) -> None:
    """One request of a kind; whatever happens to it is the gateway's to record."""
    headers = {"x-request-id": tag}
    try:
        if kind == "abandon":
            await client.post(url, json=body(kind, tag), headers=headers, timeout=0.3)
        elif body(kind, tag)["stream"]:
            async with client.stream("POST", url, json=body(kind, tag), headers=headers) as answer:
                lines = 0
                async for _line in answer.aiter_lines():
                    lines += 1
                    if kind == "leave" and lines >= 6:
                        break  # the client leaves mid-stream
        else:
            await client.post(url, json=body(kind, tag), headers=headers)
    except httpx.HTTPError:
        pass  # a killed replica, a timeout the client chose: the ledger must still agree


def test_no_row_is_lost_to_a_killed_replica_or_a_restarted_database(
    tmp_path_factory: pytest.TempPathFactory,
    providers_file: Path,
    mock: MockProcess,
    database: Cluster,
    unique,
) -> None:
    platforms = [
        Platform(
            data_dir=tmp_path_factory.mktemp(f"ledger-{n}"),
            database_url=database.url,
            config=providers_file,
        )
        for n in range(2)
    ]
    platforms[0].cli("db", "upgrade")
    user = unique("ledger")
    key = platforms[0].create_user(user)
    prefix = unique("t")
    counter = itertools.count()
    with platforms[0].serve() as doomed, platforms[1].serve() as survivor:
        servers = [doomed, survivor]

        async def load(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            async with httpx.AsyncClient(
                headers={"authorization": f"Bearer {key}"}, timeout=30
            ) as client:

                async def worker() -> None:
                    while time.monotonic() < deadline:
                        n = next(counter)
                        server: Server = servers[n % len(servers)]
                        kind = KINDS[n % len(KINDS)]
                        await one(
                            client,
                            f"{server.base_url}/chat/completions",
                            kind,
                            f"{prefix}-{kind}-{n}",
                        )

                await asyncio.gather(*(worker() for _ in range(8)))

        async def faults() -> None:
            await asyncio.sleep(2.0)
            doomed.process.send_signal(signal.SIGKILL)
            servers.remove(doomed)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(database.restart)

        async def run() -> None:
            await asyncio.gather(load(7.0), faults())

        asyncio.run(run())
        doomed.process.wait(10)
        # The killed replica's next start replays its journal; the survivor's backlog drains.
        with platforms[0].serve():
            rows = settle(platforms[0], user, prefix)
    served = {
        tag: tokens
        for tag, tokens in httpx.get(mock.url + "/_mock/served").json().items()
        if tag.startswith(prefix + "-")
    }
    by_tag: dict[str, dict[str, Any]] = {}
    for row in rows:
        tag = row["client_request_id"]
        assert tag not in by_tag, f"two rows for {tag}"
        by_tag[tag] = row
    assert served, "the upstream served nothing"
    missing = set(served) - set(by_tag)
    assert not missing, (
        f"{len(missing)} requests the upstream served have no row: {sorted(missing)[:5]}"
    )
    for tag, row in by_tag.items():
        kind = tag.rsplit("-", 2)[-2]
        if tag not in served:
            # The upstream never answered it: a failure it answered 500 to, or one the dying
            # process had not yet sent (journaled at admission, 500).
            assert row["status_code"] in (500, 502), row
            continue
        if row["usage_estimated"]:
            assert kind in CUT or row["status_code"] == 500, (tag, row)
            continue
        assert row["prompt_tokens"] == served[tag]["prompt_tokens"], (tag, row, served[tag])
        assert row["completion_tokens"] == served[tag]["completion_tokens"], (tag, row, served[tag])
    estimated = [row for row in rows if row["usage_estimated"]]
    assert all(row["prompt_tokens"] and row["total_tokens"] for row in estimated)
    assert platforms[1].cli("usage", "verify", check=False).returncode == 0


def settle(platform: Platform, user: str, prefix: str) -> list[dict[str, Any]]:
    """The user's rows, once their number has stopped growing (writers drained, journal
    replayed)."""
    engine = sa.create_engine(platform.sqlalchemy_url)
    seen, stable_since = -1, time.monotonic()
    try:
        while True:
            with engine.connect() as connection:
                rows = [
                    dict(row._mapping)
                    for row in connection.execute(
                        sa.text(
                            "SELECT r.* FROM usage_records r JOIN users u ON u.id = r.user_id "
                            "WHERE u.username = :u AND r.client_request_id LIKE :p"
                        ),
                        {"u": user, "p": prefix + "-%"},
                    )
                ]
            if len(rows) != seen:
                seen, stable_since = len(rows), time.monotonic()
            elif time.monotonic() - stable_since > 2:
                return rows
            time.sleep(0.2)
    finally:
        engine.dispose()
