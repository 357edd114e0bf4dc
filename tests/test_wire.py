"""Hostile input at the HTTP level against a real server (uvicorn and httptools on a socket):
bodies refused before they are sent and never drained, chunked transfer, bytes that are not
HTTP. Every refusal is the right status with OpenAI's error body, nothing reaches the upstream,
and the server stays healthy afterwards. Bad input the app itself refuses: test_bad_input.py."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from unittest.mock import ANY

import httpx
import orjson
import pytest

from tests.stack import MockProcess, Server

CHAT = "/chat/completions"
MiB = 1024 * 1024
LIMIT = 32 * MiB
REPLY = "word0 word1 word2 word3 word4"


# --- helpers ------------------------------------------------------------------------------------


def auth(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": "mock/chat", "messages": [{"role": "user", "content": "hi"}], **fields}


def post(
    server: Server,
    key: str,
    body: dict[str, Any] | None = None,
    *,
    content: bytes | Iterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
    path: str = CHAT,
) -> httpx.Response:
    return httpx.post(
        server.base_url + path,
        json=body,
        content=content,
        headers=auth(key, **(headers or {})),
        timeout=60,
    )


def assert_error(
    response: httpx.Response,
    status: int,
    type_: str,
    *,
    param: str | Any | None = ANY,
    code: str | None = None,
) -> dict[str, Any]:
    """The response is ``status`` with OpenAI's error body of that type, param and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert body["detail"] == error["message"]
    assert (error["type"], error["param"], error["code"]) == (type_, param, code), error
    return dict(error)


def assert_healthy(server: Server, key: str) -> None:
    """A normal call right after still gets its answer."""
    response = post(server, key, chat_body())
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == REPLY


def reached_upstream(mock: MockProcess, marker: str) -> bool:
    return marker in orjson.dumps(mock.requests()).decode()


@pytest.fixture
def marker(unique: Callable[[str], str]) -> str:
    """A string to put in a request body, to tell whether that request reached the upstream."""
    return unique("marker")


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def connect(server: Server, timeout: float = 5) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_response(sock: socket.socket) -> RawResponse | None:
    """One HTTP/1.1 response with a Content-Length, or None when the server just closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            assert not data, f"the server closed mid-response: {data!r}"
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed mid-body"
        body += chunk
    return RawResponse(int(status_line.split()[1]), headers, body[:length])


def request_head(
    server: Server, key: str, *, length: int, extra: bytes = b"", path: str = CHAT
) -> bytes:
    return (
        (
            f"POST /apiv2{path} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {length}\r\n"
        ).encode()
        + extra
        + b"\r\n"
    )


def raw_error_body(response: RawResponse) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"] == body["error"]["message"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


# --- size limits --------------------------------------------------------------------------------


def test_declared_50mb_body_is_413_before_it_is_sent(
    server: Server, user_key: str, mock: MockProcess, marker: str
) -> None:
    start = f'{{"model": "mock/chat", "user": "{marker}", "messages": [{{"content": "'.encode()
    started = time.monotonic()
    with connect(server, timeout=5) as sock:
        sock.sendall(request_head(server, user_key, length=50 * MiB) + start + b"x" * 1024)
        response = read_response(sock)
    assert response is not None
    assert time.monotonic() - started < 5
    assert response.status == 413
    error = raw_error_body(response)
    assert (error["type"], error["code"]) == ("invalid_request_error", "payload_too_large")
    assert not reached_upstream(mock, marker)
    assert_healthy(server, user_key)


def test_refused_oversized_body_is_not_drained(server: Server, user_key: str) -> None:
    """After an early 413 the server stops taking the body it refused (it closes the
    connection) instead of reading and discarding every declared byte."""
    with connect(server, timeout=10) as sock:
        sock.sendall(request_head(server, user_key, length=50 * MiB) + b"{")
        response = read_response(sock)
        assert response is not None and response.status == 413
        try:
            sock.sendall(b" " * (50 * MiB - 1))
        except OSError:
            pass  # refused: the connection was closed (or the server stopped reading)
        else:
            pytest.fail("the server read all 50 MB of the body it had refused with 413")
    assert_healthy(server, user_key)


def test_chunked_body_over_the_limit_is_413(
    server: Server, user_key: str, mock: MockProcess, marker: str
) -> None:
    def chunks() -> Iterator[bytes]:
        yield f'{{"model": "mock/chat", "user": "{marker}", "messages": [{{"content": "'.encode()
        for _ in range(LIMIT // MiB + 1):
            yield b"x" * MiB
        yield b'"}]}'

    response = post(server, user_key, content=chunks())
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, 413, "invalid_request_error", param=None, code="payload_too_large")
    assert not reached_upstream(mock, marker)
    assert_healthy(server, user_key)


def test_chunked_body_under_the_limit_is_served(
    server: Server, user_key: str, mock: MockProcess, marker: str
) -> None:
    def chunks() -> Iterator[bytes]:
        yield f'{{"model": "mock/chat", "user": "{marker}", '.encode()
        yield b'"messages": [{"role": "user", "content": "hi"}]}'

    response = post(server, user_key, content=chunks())
    assert response.status_code == 200, response.text
    assert reached_upstream(mock, marker)


# --- HTTP-level oddities ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [b"X-Note: a\x00b\r\n", b"X-Request-ID: req\x00id\r\n", b"X-\x00Name: value\r\n"],
    ids=["value", "request-id", "name"],
)
def test_nul_byte_in_a_header_is_refused_cleanly(
    server: Server, user_key: str, mock: MockProcess, marker: str, header: bytes
) -> None:
    body = orjson.dumps(chat_body(user=marker))
    with connect(server) as sock:
        sock.sendall(request_head(server, user_key, length=len(body), extra=header) + body)
        response = read_response(sock)
    if response is not None:
        assert 400 <= response.status < 500, response
    assert not reached_upstream(mock, marker)
    assert_healthy(server, user_key)
