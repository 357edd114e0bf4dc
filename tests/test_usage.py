"""Usage rows: one per request, with tokens, timings and status, for every way a request ends.

Rows of whole and streamed answers are checked against a real server on both databases, and
so is what a client hanging up does; refusals and failures in process; the writer itself on
both databases."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import openai
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from hepai_server.db import migrate
from hepai_server.db.tables import UsageRecord
from hepai_server.gateway.ledger import Journal, UsageRow
from hepai_server.gateway.usage import UsageRecorder
from hepai_server.services import accounts
from tests.conftest import DATABASES, POSTGRES_ADMIN_URL
from tests.inprocess import Account, App
from tests.stack import MockProcess, Platform, Server


def usage_row(request_id: str, **fields) -> UsageRow:
    """A usage row as a frame builds one, with the fields a test cares about."""
    defaults = dict.fromkeys(UsageRow._fields)
    defaults.update(
        request_id=request_id,
        user_id=1,
        endpoint="chat.completions",
        model="m/ok",
        stream=False,
        status_code=200,
        usage_estimated=False,
        latency_ms=1.0,
        cost_nanos=0,
        created_at=time.time(),
    )
    defaults.update(fields)
    return UsageRow(**defaults)


def api(server: Server, key: str) -> openai.OpenAI:
    return server.openai(key)


@pytest.mark.both_databases
def test_non_stream_row(platform: Platform, server: Server, user_key: str, unique) -> None:
    request_id = unique("usage-plain")
    api(server, user_key).chat.completions.create(
        model="deepseek-ai/deepseek-r1:671b",
        messages=[{"role": "user", "content": "one two three four"}],
        extra_body={"mock": {"reasoning": True}},
        extra_headers={"x-request-id": request_id},
    )
    row = platform.usage_row(request_id)
    assert row["endpoint"] == "chat.completions" and row["stream"] in (False, 0)
    assert row["model"] == "deepseek-ai/deepseek-r1:671b"
    assert row["deployment"] == "mock/deepseek-reasoner"
    assert row["status_code"] == 200 and row["error"] is None
    assert row["completion_tokens"] == 5 and row["reasoning_tokens"] == 3
    assert row["prompt_tokens"] > 0 and row["cached_tokens"] == row["prompt_tokens"] // 2
    assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
    assert row["latency_ms"] > 0 and row["ttft_ms"] is None
    assert row["user_id"] is not None and row["api_key_id"] is not None
    assert row["usage_estimated"] in (False, 0)


@pytest.mark.both_databases
def test_stream_row_has_upstream_usage_and_ttft(
    platform: Platform, server: Server, user_key: str, unique
) -> None:
    request_id = unique("usage-stream")
    stream = api(server, user_key).chat.completions.create(
        model="mock/chat",
        messages=[{"role": "user", "content": "a b"}],
        stream=True,
        extra_body={"mock": {"chunks": 9}},
        extra_headers={"x-request-id": request_id},
    )
    assert len([c for c in stream if c.choices]) == 11  # role, 9 words, finish
    row = platform.usage_row(request_id)
    assert row["stream"] in (True, 1) and row["status_code"] == 200
    assert row["completion_tokens"] == 9 and row["usage_estimated"] in (False, 0)
    assert 0 < row["ttft_ms"] <= row["latency_ms"]


async def test_embeddings_and_refusals_are_recorded(
    app: App, api: openai.AsyncOpenAI, client: httpx.AsyncClient, account: Account, unique
) -> None:
    embed_id, refused_id = unique("usage-embed"), unique("usage-refused")
    await api.embeddings.create(
        model="mock/embed", input=["x y z"], extra_headers={"x-request-id": embed_id}
    )
    row = await app.platform.usage_row(embed_id)
    assert row["endpoint"] == "embeddings" and row["prompt_tokens"] == 3
    await client.post(
        "/apiv2/chat/completions",
        headers={"x-api-key": account.key, "x-request-id": refused_id},
        json={"model": "team/physics-only", "messages": [{"role": "user", "content": "x"}]},
    )
    row = await app.platform.usage_row(refused_id)
    assert row["status_code"] == 404 and row["deployment"] is None


async def test_upstream_failure_row(
    app: App, client: httpx.AsyncClient, account: Account, unique
) -> None:
    request_id = unique("usage-failed")
    response = await client.post(
        "/apiv2/chat/completions",
        headers={"x-api-key": account.key, "x-request-id": request_id},
        json={"model": "failover/all-failing", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 502
    row = await app.platform.usage_row(request_id)
    assert row["status_code"] == 502 and "500" in row["error"]
    assert row["deployment"] == "failing/failover/all-failing"


def test_client_disconnect_cancels_upstream_and_records_delivered_tokens(
    platform: Platform, server: Server, mock: MockProcess, user_key: str, unique
) -> None:
    request_id, tag = unique("usage-gone"), unique("gone")
    body = (
        b'{"model":"mock/chat","stream":true,"messages":[{"role":"user","content":"x"}],'
        b'"mock":{"chunks":50,"delay":0.2,"tag":"' + tag.encode() + b'"}}'
    )
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(
        b"POST /apiv2/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"x-api-key: {user_key}\r\nx-request-id: {request_id}\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while received.count(b"word") < 3:
        received += sock.recv(65536)
    sock.close()
    closed_at = time.time()
    deadline = time.monotonic() + 5
    cancelled = []
    while not cancelled and time.monotonic() < deadline:
        cancelled = [e for e in mock.events() if e["tag"] == tag and e["event"] == "cancelled"]
        time.sleep(0.05)
    assert cancelled, "the upstream stream was not cancelled"
    assert cancelled[0]["at"] - closed_at < 1.0
    assert cancelled[0]["chunks"] < 10
    row = platform.usage_row(request_id)
    assert row["status_code"] == 499
    assert row["usage_estimated"] in (True, 1)
    assert 3 <= row["completion_tokens"] <= cancelled[0]["chunks"] + 1


def test_disconnect_while_upstream_is_silent_cancels_within_a_second(
    server: Server, mock: MockProcess, user_key: str, unique
) -> None:
    tag = unique("silent")
    with httpx.Client(timeout=0.5) as client, contextlib.suppress(httpx.ReadTimeout):
        client.post(
            server.base_url + "/chat/completions",
            headers={"x-api-key": user_key},
            json={
                "model": "mock/chat",
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
                "mock": {"chunks": 3, "delay": 30, "tag": tag},
            },
        )
    closed_at = time.time()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        events = [e for e in mock.events() if e["tag"] == tag]
        if events:
            assert events[0]["event"] == "cancelled"
            assert events[0]["at"] - closed_at < 1.0
            return
        time.sleep(0.05)
    raise AssertionError("the silent upstream stream was never cancelled")


def test_a_failed_write_retries_only_what_was_not_committed(tmp_path) -> None:
    import asyncio

    import sqlalchemy as sa

    from hepai_server.db import migrate
    from hepai_server.gateway.usage import UsageRecorder

    url = f"sqlite:///{tmp_path / 'usage.db'}"
    migrate.upgrade(url)
    engine = sa.create_engine(url)
    recorder = UsageRecorder(
        engine, Journal(tmp_path / "ledger"), flush_seconds=60, batch_size=2, budget_zone=UTC
    )
    for n, model in enumerate(["m/ok", "m/ok", "m/ok", None]):  # the fourth breaks its chunk
        recorder.record(usage_row(f"r{n}", model=model, total_tokens=5))
    assert asyncio.run(recorder._flush()) is False
    with engine.connect() as connection:
        written = connection.execute(sa.text("SELECT count(*) FROM usage_records")).scalar_one()
        daily = connection.execute(sa.text("SELECT sum(requests) FROM usage_daily")).scalar_one()
    assert written == 2 and daily == 2
    assert [pending.request_id for pending in recorder._pending] == ["r2", "r3"]
    engine.dispose()


@pytest.fixture(params=DATABASES)
def usage_database(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """An empty, migrated database of each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'usage.db'}"
        migrate.upgrade(url)
        yield url
        return
    name = f"hepai_usage_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0]
    url = f"postgresql+psycopg://{base}/{name}"
    migrate.upgrade(url)
    yield url
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_writer_stores_rows_as_sqlalchemy_does(usage_database: str, tmp_path) -> None:
    """Rows written through the driver read back, byte for byte, like one SQLAlchemy wrote;
    a batch too big for one statement's parameters still lands whole, with its daily totals
    and its keys' last use, which never goes backwards."""
    engine = sa.create_engine(usage_database)
    with Session(engine) as session:
        user = accounts.create_user(session, username="writer", password=None)
        key, _ = accounts.create_api_key(session, user=user)
        later_key, _ = accounts.create_api_key(session, user=user, name="later")
        later_key.last_used_at = datetime(2030, 1, 1, tzinfo=UTC)
        session.commit()
        user_id, key_id, later_id = user.id, key.id, later_key.id
    # Either side of a UTC midnight, one of them on a whole second.
    midnight = datetime(2026, 11, 21, tzinfo=UTC)
    moments = [midnight - timedelta(microseconds=1), midnight, midnight + timedelta(seconds=1.5)]
    recorder = UsageRecorder(
        engine,
        Journal(tmp_path / "ledger"),
        flush_seconds=60,
        batch_size=2000,
        budget_zone=UTC,
    )
    for n in range(2000):  # 40,000 values: more than one statement may carry
        recorder.record(
            usage_row(
                f"w{n}",
                user_id=user_id,
                api_key_id=later_id if n == 7 else key_id,
                model="m/\\odd'\"id",
                deployment=None if n % 2 else "up/m",
                stream=n % 3 == 0,
                status_code=500 if n == 5 else 200,
                prompt_tokens=n,
                completion_tokens=None if n == 4 else 2,
                total_tokens=n + 2,
                reasoning_tokens=1,
                usage_estimated=n == 9,
                bytes=2**40 if n == 0 else None,
                latency_ms=n + 0.25,
                ttft_ms=None if n % 2 else 0.5,
                error="x" * 512 if n == 5 else None,
            )
        )
    recorder._pending = [
        row._replace(created_at=moments[n % 3].timestamp())
        for n, row in enumerate(recorder._pending)
    ]
    reference = recorder._pending[:3]
    assert asyncio.run(recorder._flush()) is True
    assert recorder._pending == []
    with engine.begin() as connection:
        connection.execute(
            sa.insert(UsageRecord),
            [
                {**row._asdict(), "request_id": f"ref{n}", "created_at": moments[n]}
                for n, row in enumerate(reference)
            ],
        )
    columns = ", ".join(c.name for c in UsageRecord.__table__.columns if c.name != "id")
    with engine.connect() as connection:
        raw = connection.execute(sa.text(f"SELECT {columns} FROM usage_records ORDER BY id")).all()
        daily = connection.execute(
            sa.text("SELECT day, requests, errors, total_tokens FROM usage_daily ORDER BY day")
        ).all()
        last_used = dict(connection.execute(sa.text("SELECT id, last_used_at FROM api_keys")).all())
    with Session(engine) as session:
        first = session.scalars(sa.select(UsageRecord).order_by(UsageRecord.id).limit(1)).one()
    engine.dispose()
    assert len(raw) == 2003
    for n in range(3):  # the same values, stored the same way as SQLAlchemy stores them
        assert raw[n][1:] == raw[2000 + n][1:]
    assert first.created_at == moments[0] and first.bytes == 2**40 and first.stream is True
    assert first.model == "m/\\odd'\"id" and first.ttft_ms == 0.5 and first.usage_estimated is False
    assert len(raw[5][8]) == 512
    assert [(str(day), n, errors) for day, n, errors, _ in daily] == [
        ("2026-11-20", 667, 0),
        ("2026-11-21", 1333, 1),
    ]
    assert sum(int(tokens) for *_, tokens in daily) == sum(n + 2 for n in range(2000))
    stamp = last_used[key_id]
    if isinstance(stamp, str):  # SQLite
        stamp = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
    assert stamp == moments[1] + timedelta(seconds=1.5)
    assert str(last_used[later_id]).startswith("2030-01-01")
