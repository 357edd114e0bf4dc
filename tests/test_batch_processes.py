"""The Batch API on real server processes with the official openai client: a batch of 200 chat
lines (and one of embeddings) answered and billed once each, at the model's price; cancelling,
and other users kept out; and on two replicas sharing PostgreSQL and procrastinate, a replica
killed mid-batch, whose batch the other finishes with every line answered and billed once."""

from __future__ import annotations

import io
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
import orjson
import psycopg
import pytest
import sqlalchemy as sa
from openai.types import Batch

from tests.conftest import POSTGRES_ADMIN_URL
from tests.stack import MockProcess, Platform, Server

pytestmark = pytest.mark.e2e

CHAT_URL = "/v1/chat/completions"


def chat_lines(marker: str, count: int, delay: float = 0.0) -> bytes:
    body: dict[str, Any] = {"model": "mock/chat"}
    if delay:
        body["mock"] = {"delay": delay}
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"{marker}-{n}",
                "method": "POST",
                "url": CHAT_URL,
                "body": {**body, "messages": [{"role": "user", "content": f"{marker} {n}"}]},
            }
        )
        + b"\n"
        for n in range(count)
    )


def submit(client: openai.OpenAI, raw: bytes, endpoint: str = CHAT_URL) -> Batch:
    file = client.files.create(file=("in.jsonl", io.BytesIO(raw)), purpose="batch")
    return client.batches.create(
        input_file_id=file.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )


def until(
    client: openai.OpenAI, batch_id: str, done: Callable[[Batch], bool], timeout: float = 90
) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)


def ended(batch: Batch) -> bool:
    return batch.status in ("completed", "failed", "expired", "cancelled")


def answered(batch: Batch) -> int:
    return batch.request_counts.completed if batch.request_counts is not None else 0


def output(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [orjson.loads(line) for line in client.files.content(file_id).content.splitlines()]


def ledger(platform: Platform, batch_id: str) -> list[dict[str, Any]]:
    """The usage rows of a batch's lines."""
    engine = sa.create_engine(platform.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT * FROM usage_records WHERE request_id LIKE :p"),
                {"p": f"{batch_id}-%"},
            )
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def settled(platform: Platform, batch_id: str, count: int) -> list[dict[str, Any]]:
    """The batch's usage rows once ``count`` are written, and a moment later (none more)."""
    deadline = time.monotonic() + 10
    while len(rows := ledger(platform, batch_id)) < count:
        assert time.monotonic() < deadline, f"{len(rows)} of {count} rows"
        time.sleep(0.1)
    return rows


@pytest.fixture(scope="module")
def priced(
    tmp_path_factory: pytest.TempPathFactory, providers_file: Path
) -> Iterator[tuple[Platform, Server]]:
    """A server of its own, where mock/chat has a price (no other test's costs change)."""
    platform = Platform(
        data_dir=tmp_path_factory.mktemp("batches"), database_url=None, config=providers_file
    )
    platform.cli("db", "upgrade")
    platform.cli("price", "set", "mock/chat", "--input", "2", "--output", "8")
    with platform.serve() as server:
        yield platform, server


def test_a_200_line_batch_is_answered_and_billed_once_per_line(
    priced: tuple[Platform, Server], mock: MockProcess
) -> None:
    platform, server = priced
    client = server.openai(platform.create_user(f"batcher-{secrets.token_hex(3)}"))
    marker = f"two-hundred-{secrets.token_hex(3)}"
    chat = submit(client, chat_lines(marker, 200))
    embed = submit(
        client,
        b"".join(
            orjson.dumps(
                {
                    "custom_id": f"e{n}",
                    "method": "POST",
                    "url": "/v1/embeddings",
                    "body": {"model": "mock/embed", "input": f"text {n}"},
                }
            )
            + b"\n"
            for n in range(20)
        ),
        "/v1/embeddings",
    )
    batch = until(client, chat.id, ended)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (200, 200)
    assert batch.request_counts.failed == 0 and batch.error_file_id is None
    lines = output(client, batch.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(
        f"{marker}-{n}" for n in range(200)
    )
    assert {line["response"]["status_code"] for line in lines} == {200}
    rows = settled(platform, batch.id, 200)
    assert len(rows) == 200 and len({row["request_id"] for row in rows}) == 200
    assert all(row["cost_nanos"] > 0 and row["status_code"] == 200 for row in rows)
    assert batch.usage is not None
    assert batch.usage.output_tokens == sum(row["completion_tokens"] for row in rows)
    assert len([r for r in mock.requests() if marker in str(r["body"])]) == 200
    embedded = until(client, embed.id, ended)
    assert embedded.status == "completed" and len(output(client, embedded.output_file_id)) == 20
    assert len(settled(platform, embed.id, 20)) == 20


def test_a_batch_is_its_owners_alone_and_cancels_midway(
    priced: tuple[Platform, Server],
) -> None:
    platform, server = priced
    owner = server.openai(platform.create_user(f"owner-{secrets.token_hex(3)}"))
    other = server.openai(platform.create_user(f"other-{secrets.token_hex(3)}"))
    raw = chat_lines(f"cancel-{secrets.token_hex(3)}", 40, delay=0.2)
    batch = submit(owner, raw)
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.create(
            input_file_id=batch.input_file_id, endpoint=CHAT_URL, completion_window="24h"
        )
    until(owner, batch.id, lambda b: answered(b) > 0)
    assert owner.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    cancelled = until(owner, batch.id, ended)
    assert cancelled.status == "cancelled" and 0 < answered(cancelled) < 40
    assert len(output(owner, cancelled.output_file_id)) == answered(cancelled)
    assert len(output(owner, cancelled.error_file_id)) == 40 - answered(cancelled)
    assert len(settled(platform, batch.id, answered(cancelled))) == answered(cancelled)


# -- two replicas, one killed ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"hepai_batches_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_a_replica_killed_mid_batch_leaves_every_line_answered_and_billed_once(
    tmp_path_factory: pytest.TempPathFactory,
    providers_file: Path,
    database: str,
    mock: MockProcess,
) -> None:
    shared = {
        "HEPAI_SERVER_SECRET_KEY": secrets.token_hex(32),
        # A replica silent for two seconds is dead: its job and its batch go to the other.
        "HEPAI_SERVER_JOB_STALLED_SECONDS": "2",
        "HEPAI_SERVER_JOB_RECOVERY_SECONDS": "1",
    }
    machines = [
        Platform(
            data_dir=tmp_path_factory.mktemp(f"replica-{n}"),
            database_url=database,
            config=providers_file,
            extra_env=shared,
        )
        for n in range(2)
    ]
    machines[0].cli("db", "upgrade")
    key = machines[0].create_user("batcher")
    marker = f"killed-{secrets.token_hex(3)}"
    with ExitStack() as stack:
        replicas = [stack.enter_context(machine.serve()) for machine in machines]
        client = replicas[0].openai(key)
        # 200 lines of 0.1 s, four at a time: about five seconds, time enough to kill midway.
        batch = submit(client, chat_lines(marker, 200, delay=0.1))
        midway = until(client, batch.id, lambda b: answered(b) >= 40, timeout=60)
        assert midway.status == "in_progress" and answered(midway) < 200
        (running,) = [r for r in replicas if f"batch {batch.id}: answering" in r.logs()]
        (survivor,) = [r for r in replicas if r is not running]
        running.process.send_signal(signal.SIGKILL)
        running.process.wait()
        client = survivor.openai(key)
        done = until(client, batch.id, ended, timeout=120)
        resumed = survivor.logs()
        lines = output(client, done.output_file_id)
    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (200, 200)
    assert done.request_counts.failed == 0
    # The survivor took the batch up where it was, not from the start.
    taken_up = [line for line in resumed.splitlines() if f"batch {batch.id}: answering" in line]
    owed = int(taken_up[-1].split("answering its ")[1].split()[0])
    assert 0 < owed <= 200 - 40
    assert sorted(line["custom_id"] for line in lines) == sorted(
        f"{marker}-{n}" for n in range(200)
    )
    rows = settled(machines[1], batch.id, 200)
    assert len(rows) == 200 and len({row["request_id"] for row in rows}) == 200
    # The lines in flight when the replica died were called again, and billed once all the same.
    calls = len([r for r in mock.requests() if marker in str(r["body"])])
    assert 200 <= calls <= 200 + 4  # at most batch_concurrency were in flight
