"""Health and draining: liveness, readiness and its checks, a SIGTERM that drains before the
process stops, the authenticator's stale answers while the database is away, and the Redis
ping readiness uses."""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from hepai_server.errors import AuthenticationFailed, DatabaseUnavailable
from hepai_server.gateway.auth import Authenticator
from hepai_server.gateway.health import ping_redis
from hepai_server.services.accounts import Caller
from hepai_server.state.generation import Generation
from hepai_server.state.resp import pack
from hepai_server.telemetry.logs import REQUEST_ID, JSONLines, RequestStamp
from tests.stack import Platform, Server, free_port

KEY = "sk-" + "a" * 48


def caller() -> Caller:
    return Caller(
        key_id=1,
        user_id=1,
        username="alice",
        email=None,
        is_admin=False,
        groups=frozenset(),
        allowed_models=None,
        expires_at=None,
    )


class FlakyLookup:
    """A key lookup whose database can be switched off."""

    def __init__(self) -> None:
        self.answering = True
        self.calls = 0

    def __call__(self, _key_hash: str) -> Caller | None:
        self.calls += 1
        if not self.answering:
            raise DatabaseUnavailable("the database did not answer")
        return caller()


def test_a_known_key_is_served_stale_while_the_database_is_away(tmp_path: Path) -> None:
    async def scenario() -> None:
        lookup = FlakyLookup()
        auth = Authenticator(lookup, Generation(tmp_path / "g"), ttl=0.0)
        assert (await auth.authenticate(KEY)).username == "alice"
        lookup.answering = False
        assert (await auth.authenticate(KEY)).username == "alice"
        assert auth.stale_answers == 1
        # Kept for a while: the next call does not knock on the dead database again.
        assert (await auth.authenticate(KEY)).username == "alice"
        assert lookup.calls == 2

    asyncio.run(scenario())


def test_an_unknown_key_gets_503_not_401_while_the_database_is_away(tmp_path: Path) -> None:
    async def scenario() -> None:
        lookup = FlakyLookup()
        lookup.answering = False
        auth = Authenticator(lookup, Generation(tmp_path / "g"), ttl=60.0)
        with pytest.raises(DatabaseUnavailable):
            await auth.authenticate(KEY)
        with pytest.raises(AuthenticationFailed):
            await auth.authenticate("not-a-key")

    asyncio.run(scenario())


def test_redis_commands_are_arrays_of_bulk_strings() -> None:
    assert pack((b"AUTH", "pässword")) == b"*2\r\n$4\r\nAUTH\r\n$9\r\np\xc3\xa4ssword\r\n"


@contextmanager
def redis_server(*args: str) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", *args],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                asyncio.run(ping_redis(f"redis://:{args[-1]}@127.0.0.1:{port}/0"))
                break
            except (OSError, ConnectionError):
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def test_readiness_pings_redis_with_its_password() -> None:
    with redis_server("--requirepass", "s3cret") as port:
        asyncio.run(ping_redis(f"redis://:s3cret@127.0.0.1:{port}/0"))
        with pytest.raises(ConnectionError, match="AUTH"):
            asyncio.run(ping_redis(f"redis://:wrong@127.0.0.1:{port}/0"))
        with pytest.raises(ConnectionError, match="PING"):
            asyncio.run(ping_redis(f"redis://127.0.0.1:{port}/0"))


@pytest.mark.e2e
def test_live_and_ready_answer_200_and_healthz_still_works(server: Server) -> None:
    for path in ("/health/live", "/healthz"):
        assert httpx.get(server.url + path).json()["status"] == "ok"
    ready = httpx.get(server.url + "/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": "ok", "draining": "no"},
    }


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/apiv2/models"),
        ("GET", "/apiv2/files"),
        ("GET", "/health/ready"),
        ("GET", "/apiv2/no/such/route"),
        ("POST", "/apiv2/chat/completions"),
        ("GET", "/apiv2/chat/completions"),
    ],
)
def test_every_api_answer_carries_a_request_id(
    server: Server, user_key: str, method: str, path: str
) -> None:
    response = httpx.request(
        method,
        server.url + path,
        headers={"authorization": f"Bearer {user_key}", "x-request-id": "trace-me-0001"},
    )
    # The platform's own id (the ledger's key), and the client's beside it.
    assert response.headers["x-request-id"].startswith("req-"), response.status_code
    assert response.headers["x-client-request-id"] == "trace-me-0001", response.status_code
    fresh = httpx.request(method, server.url + path)
    assert fresh.headers["x-request-id"].startswith("req-")
    assert "x-client-request-id" not in fresh.headers


@pytest.mark.e2e
def test_sigterm_drains_ready_answers_503_while_requests_are_still_served(
    platform: Platform, user_key: str
) -> None:
    with platform.serve(env={"HEPAI_SERVER_DRAIN_SECONDS": "3"}) as server:
        assert httpx.get(server.url + "/health/ready").status_code == 200
        server.process.send_signal(signal.SIGTERM)
        for _ in range(100):  # the signal is handled between two turns of the event loop
            ready = httpx.get(server.url + "/health/ready")
            if ready.status_code != 200:
                break
            time.sleep(0.02)
        assert ready.status_code == 503
        assert ready.json()["checks"]["draining"] == "yes"
        answer = httpx.post(
            server.base_url + "/chat/completions",
            json={"model": "mock/chat", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {user_key}"},
        )
        assert answer.status_code == 200
        assert answer.headers["connection"] == "close"
        assert server.process.wait(30) is not None


def test_json_log_lines_carry_the_request_id_of_their_request() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestStamp())
    handler.setFormatter(JSONLines())
    log = logging.getLogger("tests.json-lines")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("outside")
        token = REQUEST_ID.set("req-0123")
        try:
            log.warning("inside %s", "a request")
        finally:
            REQUEST_ID.reset(token)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    outside, inside, failed = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert "request_id" not in outside
    assert inside["request_id"] == "req-0123"
    assert inside["message"] == "inside a request"
    assert inside["level"] == "warning" and inside["logger"] == "tests.json-lines"
    assert "ValueError: boom" in failed["exception"]
