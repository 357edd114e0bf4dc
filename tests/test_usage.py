"""Usage rows: one per request, with tokens, timings and status, for every way a request ends."""

from __future__ import annotations

import contextlib
import socket
import time

import httpx
import openai

from tests.stack import MockProcess, Platform, Server


def api(server: Server, key: str) -> openai.OpenAI:
    return server.openai(key)


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


def test_embeddings_and_refusals_are_recorded(
    platform: Platform, server: Server, user_key: str, unique
) -> None:
    embed_id, refused_id = unique("usage-embed"), unique("usage-refused")
    api(server, user_key).embeddings.create(
        model="mock/embed", input=["x y z"], extra_headers={"x-request-id": embed_id}
    )
    row = platform.usage_row(embed_id)
    assert row["endpoint"] == "embeddings" and row["prompt_tokens"] == 3
    httpx.post(
        server.base_url + "/chat/completions",
        headers={"x-api-key": user_key, "x-request-id": refused_id},
        json={"model": "team/physics-only", "messages": [{"role": "user", "content": "x"}]},
    )
    row = platform.usage_row(refused_id)
    assert row["status_code"] == 404 and row["deployment"] is None


def test_upstream_failure_row(platform: Platform, server: Server, user_key: str, unique) -> None:
    request_id = unique("usage-failed")
    response = httpx.post(
        server.base_url + "/chat/completions",
        headers={"x-api-key": user_key, "x-request-id": request_id},
        json={"model": "failover/all-failing", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 502
    row = platform.usage_row(request_id)
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
    from hepai_server.protocol.openai import Usage

    url = f"sqlite:///{tmp_path / 'usage.db'}"
    migrate.upgrade(url)
    engine = sa.create_engine(url)
    recorder = UsageRecorder(engine, flush_seconds=60, batch_size=2)
    row = {
        "user_id": 1,
        "api_key_id": None,
        "endpoint": "chat.completions",
        "deployment": None,
        "stream": False,
        "status_code": 200,
        "usage": Usage(total_tokens=5),
        "latency_ms": 1.0,
    }
    for n, model in enumerate(["m/ok", "m/ok", "m/ok", None]):  # the fourth breaks its chunk
        recorder.record(request_id=f"r{n}", model=model, **row)  # type: ignore[arg-type]
    assert asyncio.run(recorder._flush()) is False
    with engine.connect() as connection:
        written = connection.execute(sa.text("SELECT count(*) FROM usage_records")).scalar_one()
        daily = connection.execute(sa.text("SELECT sum(requests) FROM usage_daily")).scalar_one()
    assert written == 2 and daily == 2
    assert [pending["request_id"] for pending in recorder._pending] == ["r2", "r3"]
    engine.dispose()
