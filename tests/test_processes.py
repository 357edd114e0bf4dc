"""Serving with several processes, and stopping cleanly."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.stack import Platform

CHAT = {"model": "mock/chat", "messages": [{"role": "user", "content": "procs"}]}


def test_revocation_reaches_every_worker_process(platform: Platform, unique) -> None:
    key = platform.create_user(unique("multi"))
    with platform.serve("--workers", "2") as server, httpx.Client() as client:
        # New connections land on either process; enough calls warm both caches.
        for _ in range(20):
            response = client.post(
                server.base_url + "/chat/completions",
                headers={"x-api-key": key, "connection": "close"},
                json=CHAT,
            )
            assert response.status_code == 200
        platform.cli("key", "revoke", str(platform.key_id(key)))
        statuses = {
            client.post(
                server.base_url + "/chat/completions",
                headers={"x-api-key": key, "connection": "close"},
                json=CHAT,
            ).status_code
            for _ in range(20)
        }
        assert statuses == {401}


@pytest.mark.both_databases
def test_sigterm_drains_pending_usage_rows(platform: Platform, unique) -> None:
    key = platform.create_user(unique("drain"))
    ids = [unique("drain-req") for _ in range(5)]
    # A flush interval far longer than the test: rows can only land through the drain.
    with platform.serve(env={"HEPAI_SERVER_USAGE_FLUSH_SECONDS": "3600"}) as server:
        for request_id in ids:
            response = httpx.post(
                server.base_url + "/chat/completions",
                headers={"x-api-key": key, "x-request-id": request_id},
                json=CHAT,
            )
            assert response.status_code == 200
        assert platform.usage_rows(ids[0], timeout=0.3) == []
        server.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down gracefully.
        assert server.process.wait(30) in (0, -signal.SIGTERM)
    for request_id in ids:
        assert len(platform.usage_rows(request_id, timeout=0)) == 1
