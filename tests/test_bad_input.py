"""Hostile and broken input against the app: every refusal is the right status with OpenAI's
error body, nothing reaches the upstream, and the app stays healthy afterwards.

What only the wire shows (bodies refused before they are sent, chunked transfer, bytes that
are not HTTP) is in test_wire.py, against a real server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any
from unittest.mock import ANY

import httpx
import orjson
import pytest

from hepai_server.worker import Worker, remote
from tests.inprocess import Account, App, Upstream, serve_worker
from tests.stack import UPSTREAM_KEY

CHAT = "/chat/completions"
WRONG_PROVIDER_KEY = "not-the-upstream-key"  # tests/conftest.py's provider_keys sets WRONG_KEY
REPLY = "word0 word1 word2 word3 word4"


# --- helpers ------------------------------------------------------------------------------------


def auth(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": "mock/chat", "messages": [{"role": "user", "content": "hi"}], **fields}


async def post(
    client: httpx.AsyncClient,
    key: str,
    body: dict[str, Any] | None = None,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
    path: str = CHAT,
) -> httpx.Response:
    return await client.post(
        "/apiv2" + path, json=body, content=content, headers=auth(key, **(headers or {}))
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


def assert_bad_request(response: httpx.Response, param: str | Any | None = ANY) -> None:
    assert_error(response, 400, "invalid_request_error", param=param)


async def assert_healthy(client: httpx.AsyncClient, key: str) -> None:
    """A normal call right after still gets its answer."""
    response = await post(client, key, chat_body())
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == REPLY


def reached_upstream(upstream: Upstream, marker: str) -> bool:
    return marker in orjson.dumps(upstream.requests()).decode()


@pytest.fixture
def marker(unique: Callable[[str], str]) -> str:
    """A string to put in a request body, to tell whether that request reached the upstream."""
    return unique("marker")


@pytest.fixture
def key(account: Account) -> str:
    return account.key


def sse_payloads(raw: bytes) -> list[bytes]:
    events = [event for event in raw.split(b"\n\n") if event]
    assert all(event.startswith(b"data: ") for event in events), events
    return [event.removeprefix(b"data: ") for event in events]


# --- the body is not a JSON object -------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b'{"model": "mock/chat", "messages": [',
        b"{'model': 'mock/chat'}",
        b'{"model": "mock/chat",}',
        b'{"model": "mock/\xff\xfechat", "messages": []}',
        b"NaN",
    ],
    ids=["truncated", "single-quotes", "trailing-comma", "invalid-utf8", "nan"],
)
async def test_malformed_json_is_400(client: httpx.AsyncClient, key: str, content: bytes) -> None:
    assert_bad_request(await post(client, key, content=content), param=None)
    await assert_healthy(client, key)


@pytest.mark.parametrize(
    "value",
    [["mock/chat"], "mock/chat", 42, None, True],
    ids=["array", "string", "number", "null", "boolean"],
)
async def test_json_that_is_not_an_object_is_400(
    client: httpx.AsyncClient, key: str, value: Any
) -> None:
    response = await post(client, key, content=orjson.dumps(value))
    assert_bad_request(response, param=None)
    assert "object" in response.json()["error"]["message"]
    await assert_healthy(client, key)


async def test_empty_body_is_400(client: httpx.AsyncClient, key: str) -> None:
    response = await post(client, key, content=b"")
    assert_bad_request(response, param=None)
    assert "empty" in response.json()["error"]["message"]
    await assert_healthy(client, key)


async def test_marker_of_an_accepted_request_reaches_the_upstream(
    client: httpx.AsyncClient, key: str, upstream: Upstream, marker: str
) -> None:
    """The control for every `not reached_upstream` below: the check can see a marker."""
    assert (await post(client, key, chat_body(user=marker))).status_code == 200
    assert reached_upstream(upstream, marker)


# --- fields of the wrong type or out of range ---------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", 42),
        ("model", ["mock/chat"]),
        ("messages", "hello"),
        ("messages", []),
        ("messages", ["hello"]),
        ("stream", "yes"),
        ("stream", 1),
        ("stream_options", "include_usage"),
        ("n", 0),
        ("n", 1000),
        ("n", True),
        ("n", 2.0),
        ("temperature", "hot"),
        ("top_p", [1]),
        ("max_tokens", 0),
        ("max_tokens", "100"),
        ("max_completion_tokens", 10**12),
    ],
    ids=lambda value: repr(value)[:20],
)
async def test_wrong_type_or_range_is_400_naming_the_field(
    client: httpx.AsyncClient, key: str, upstream: Upstream, marker: str, field: str, value: Any
) -> None:
    response = await post(client, key, chat_body(user=marker, **{field: value}))
    assert_bad_request(response, param=field)
    assert not reached_upstream(upstream, marker)
    await assert_healthy(client, key)


async def test_max_tokens_out_of_range_is_400(
    client: httpx.AsyncClient, key: str, upstream: Upstream, marker: str
) -> None:
    for value in (-1, 10**12):
        response = await post(client, key, chat_body(user=marker, max_tokens=value))
        assert_bad_request(response, param="max_tokens")
        assert "max_tokens" in response.json()["error"]["message"]
    assert not reached_upstream(upstream, marker)
    await assert_healthy(client, key)


async def test_missing_model_is_400(
    client: httpx.AsyncClient, key: str, upstream: Upstream, marker: str
) -> None:
    body = chat_body(user=marker)
    del body["model"]
    assert_bad_request(await post(client, key, body), param="model")
    assert not reached_upstream(upstream, marker)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/embeddings", {"model": "mock/embed", "input": []}, "input"),
        (
            "/embeddings",
            {"model": "mock/embed", "input": "x", "encoding_format": "int8"},
            "encoding_format",
        ),
        ("/completions", {"model": "mock/complete", "prompt": 7}, "prompt"),
        ("/completions", {"model": "mock/complete", "prompt": "p", "n": 0}, "n"),
        ("/rerank", {"model": "mock/rerank", "query": 1, "documents": ["a"]}, "query"),
        ("/rerank", {"model": "mock/rerank", "query": "q", "documents": "a"}, "documents"),
        (
            "/rerank",
            {"model": "mock/rerank", "query": "q", "documents": ["a"], "top_n": 0},
            "top_n",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_other_endpoints_check_their_fields(
    client: httpx.AsyncClient,
    key: str,
    upstream: Upstream,
    marker: str,
    path: str,
    body: dict[str, Any],
    param: str,
) -> None:
    response = await post(client, key, {**body, "user": marker}, path=path)
    assert_bad_request(response, param=param)
    assert not reached_upstream(upstream, marker)
    await assert_healthy(client, key)


# --- model ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    ["", "m" * 10_000, "\x00", "mock/chat\x00", "mock/chat\n", "mock/\x1b[31mchat", "\u200b"],
    ids=["empty", "10k-chars", "nul", "trailing-nul", "newline", "ansi-escape", "zero-width"],
)
async def test_absurd_model_id_is_400(
    client: httpx.AsyncClient, key: str, upstream: Upstream, marker: str, model: str
) -> None:
    response = await post(client, key, chat_body(model=model, user=marker))
    assert_bad_request(response, param="model")
    assert len(response.content) < 1024, "the error must not echo an absurd id back"
    assert not reached_upstream(upstream, marker)
    await assert_healthy(client, key)


async def test_unknown_model_is_404_model_not_found(
    client: httpx.AsyncClient, key: str, upstream: Upstream, marker: str
) -> None:
    response = await post(client, key, chat_body(model="no-such/model", user=marker))
    error = assert_error(
        response, 404, "invalid_request_error", param="model", code="model_not_found"
    )
    assert "no-such/model" in error["message"]
    assert not reached_upstream(upstream, marker)
    await assert_healthy(client, key)


async def test_wrong_model_type_is_400_naming_model(client: httpx.AsyncClient, key: str) -> None:
    assert_bad_request(await post(client, key, chat_body(model="mock/embed")), param="model")


# --- size limits --------------------------------------------------------------------------------


async def test_body_declared_over_the_limit_is_413_and_not_relayed(
    client: httpx.AsyncClient, key: str, upstream: Upstream, app: App, marker: str
) -> None:
    """The app refuses by the declared length (a real socket shows it refuses before the body
    is sent: test_wire.py); here the body is all there, one byte over."""
    limit = app.gateway.settings.max_body_bytes
    head = orjson.dumps(chat_body(user=marker, messages=[{"role": "user", "content": ""}]))
    body = head.replace(b'"content":""', b'"content":"' + b"x" * (limit + 1 - len(head)) + b'"')
    assert len(body) == limit + 1
    response = await post(client, key, content=body)
    assert_error(response, 413, "invalid_request_error", param=None, code="payload_too_large")
    assert not reached_upstream(upstream, marker)
    await assert_healthy(client, key)


# --- deep nesting -------------------------------------------------------------------------------


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def body_with(marker: str, field: bytes, value: bytes) -> bytes:
    """A chat body with a marker and ``field`` set to the raw JSON ``value``."""
    head = f'{{"model": "mock/chat", "user": "{marker}", '.encode()
    if field == b"messages":
        return head + b'"messages": ' + value + b"}"
    return (
        head + b'"messages": [{"role": "user", "content": "hi"}], "' + field + b'": ' + value + b"}"
    )


def content_of(value: bytes) -> bytes:
    return b'[{"role": "user", "content": ' + value + b"}]"


@pytest.mark.parametrize(
    "build",
    [
        lambda marker: b'["' + marker.encode() + b'", ' + nested_arrays(10_000) + b"]",
        lambda marker: body_with(marker, b"messages", nested_arrays(10_000)),
        lambda marker: body_with(marker, b"metadata", nested_objects(10_000)),
        lambda marker: body_with(marker, b"messages", content_of(nested_arrays(10_000))),
        # Deep enough to refuse, yet shallower than the parser's own limit (1024 levels):
        lambda marker: body_with(marker, b"metadata", nested_objects(300)),
        lambda marker: body_with(marker, b"messages", content_of(nested_arrays(600))),
    ],
    ids=[
        "top-level-10k",
        "messages-10k",
        "field-objects-10k",
        "content-arrays-10k",
        "field-objects-300",
        "content-arrays-600",
    ],
)
async def test_deeply_nested_json_is_400_not_500(
    client: httpx.AsyncClient,
    key: str,
    upstream: Upstream,
    marker: str,
    build: Callable[[str], bytes],
) -> None:
    response = await post(client, key, content=build(marker))
    assert_bad_request(response)
    assert not reached_upstream(upstream, marker)
    await assert_healthy(client, key)


async def test_usage_row_of_a_request_the_gateway_cannot_forward_has_its_real_status(
    client: httpx.AsyncClient, app: App, key: str, unique: Callable[[str], str]
) -> None:
    """Nesting the parser accepts but the encoder refuses (>254 levels) must not be recorded
    as a success: the row's status is the status the client got."""
    request_id = unique("deep")
    response = await post(
        client,
        key,
        content=body_with(request_id, b"metadata", nested_objects(300)),
        headers={"x-request-id": request_id},
    )
    row = await app.platform.usage_row(request_id)
    assert row["status_code"] == response.status_code
    assert row["status_code"] != 200 and row["error"]


# --- HTTP-level oddities ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
async def test_json_body_is_read_whatever_the_content_type(
    client: httpx.AsyncClient,
    key: str,
    upstream: Upstream,
    marker: str,
    content_type: str | None,
) -> None:
    """The gateway reads every relay body as JSON, as OpenAI does: a wrong or missing
    Content-Type is no reason to refuse a valid body."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = await post(
        client, key, content=orjson.dumps(chat_body(user=marker)), headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == REPLY
    assert reached_upstream(upstream, marker)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/apiv2/chat/completions"),
        ("PUT", "/v1/embeddings"),
        ("DELETE", "/apiv2/v1/completions"),
        ("POST", "/apiv2/models"),
        ("POST", "/healthz"),
    ],
)
async def test_wrong_method_is_405_with_json_error(
    client: httpx.AsyncClient, key: str, method: str, path: str
) -> None:
    response = await client.request(method, path, headers=auth(key))
    error = assert_error(response, 405, "invalid_request_error", param=None)
    assert method in error["message"]
    await assert_healthy(client, key)


async def test_405_names_the_allowed_method(client: httpx.AsyncClient, key: str) -> None:
    """RFC 9110 §15.5.6: a 405 response MUST carry an Allow header."""
    response = await client.get("/apiv2" + CHAT, headers=auth(key))
    assert response.status_code == 405
    assert response.headers.get("allow") == "POST"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/apiv2/chat/complete"),
        ("GET", "/nope"),
        ("GET", "/apiv3/models"),
        ("POST", "/v1/v1/chat/completions"),
    ],
)
async def test_unknown_route_is_404_with_json_error(
    client: httpx.AsyncClient, key: str, method: str, path: str
) -> None:
    response = await client.request(method, path, headers=auth(key))
    assert_error(response, 404, "not_found_error", param=None)
    await assert_healthy(client, key)


# --- upstream failures --------------------------------------------------------------------------


async def test_stream_broken_by_the_upstream_ends_with_one_error_event_and_no_done(
    client: httpx.AsyncClient, app: App, key: str, unique: Callable[[str], str]
) -> None:
    request_id = unique("broken-stream")
    response = await post(
        client,
        key,
        chat_body(stream=True, mock={"break_after": 2}),
        headers={"x-request-id": request_id},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.content)
    assert b"[DONE]" not in payloads
    chunks = [orjson.loads(payload) for payload in payloads]
    assert [("error" in chunk) for chunk in chunks] == [False, False, True]
    assert [chunk["choices"][0]["delta"] for chunk in chunks[:2]] == [
        {"role": "assistant", "content": ""},
        {"content": "word0 "},
    ]
    assert set(chunks[-1]) == {"error"}
    error = chunks[-1]["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("upstream_error", None, None)
    row = await app.platform.usage_row(request_id)
    assert (row["status_code"], bool(row["stream"])) == (502, True)
    assert row["error"] == error["message"]
    await assert_healthy(client, key)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_upstream_500_on_the_only_deployment_is_502(
    client: httpx.AsyncClient, app: App, key: str, unique: Callable[[str], str], stream: bool
) -> None:
    request_id = unique("all-failing")
    response = await post(
        client,
        key,
        chat_body(model="failover/all-failing", stream=stream),
        headers={"x-request-id": request_id},
    )
    error = assert_error(response, 502, "upstream_error", param=None)
    assert "500" in error["message"]
    assert (await app.platform.usage_row(request_id))["status_code"] == 502
    await assert_healthy(client, key)


async def test_connection_refused_is_502(client: httpx.AsyncClient, key: str) -> None:
    response = await post(client, key, chat_body(model="failover/all-dead"))
    error = assert_error(response, 502, "upstream_error", param=None)
    assert "dead" in error["message"]
    await assert_healthy(client, key)


async def test_rejected_provider_credentials_are_502_without_the_key(
    client: httpx.AsyncClient, key: str, upstream: Upstream, marker: str
) -> None:
    response = await post(client, key, chat_body(model="broken/wrong-provider-key", user=marker))
    error = assert_error(response, 502, "upstream_error", param=None)
    assert "credentials" in error["message"]
    assert reached_upstream(upstream, marker), "the gateway did try the provider"
    for secret in (WRONG_PROVIDER_KEY, UPSTREAM_KEY, key):
        assert secret not in response.text
        assert secret not in str(response.headers)
    await assert_healthy(client, key)


# --- the platform's own routes and the worker gate ----------------------------------------------


async def test_a_json_body_past_the_platform_routes_limit_is_413(
    client: httpx.AsyncClient, key: str, app: App
) -> None:
    """The account, group, vector-store and MCP routes read JSON too, within their own limit."""
    limit = app.gateway.settings.api_max_body_bytes
    body = b'{"name": "' + b"x" * limit + b'"}'
    response = await post(client, key, content=body, path="/vector_stores")
    assert_error(response, 413, "invalid_request_error", param=None, code="payload_too_large")

    async def halves() -> AsyncIterator[bytes]:
        yield body[: limit // 2]
        yield body[limit // 2 :]

    chunked = await client.post("/apiv2/vector_stores", content=halves(), headers=auth(key))
    assert_error(chunked, 413, "invalid_request_error", param=None, code="payload_too_large")
    assert (await post(client, key, {"name": "small"}, path="/vector_stores")).status_code == 200


class Echo(Worker):
    """Answers with what it was given."""

    @remote
    def echo(self, *args: Any, **kwargs: Any) -> str:
        return "ok"


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("application/json", b'{"kwargs": {"a": ' + nested_arrays(1000) + b"}}"),
        ("application/json", b'{"args": [' + nested_objects(1000) + b"]}"),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="kwargs'
            + b"[a]" * 300
            + b'"\r\n\r\nv\r\n--b--\r\n',
        ),
    ],
    ids=["json-arrays-1000", "json-objects-1000", "form-fields-300"],
)
async def test_a_worker_call_nested_past_reason_is_answered_not_500(
    app: App, account: Account, unique: Callable[[str], str], content_type: str, body: bytes
) -> None:
    echo = Echo()
    echo.name = f"{account.username}/echo-{unique('n')}"
    async with serve_worker(app, echo, account.key), app.client() as client:
        response = await client.post(
            "/apiv2/worker/unified_gate/",
            params={"model": echo.name, "function": "echo"},
            content=body,
            headers=auth(account.key, **{"content-type": content_type}),
        )
        assert response.status_code < 500, response.text
        fine = await client.post(
            "/apiv2/worker/unified_gate/",
            params={"model": echo.name, "function": "echo"},
            json={"kwargs": {"a": 1}},
            headers=auth(account.key),
        )
        assert fine.status_code == 200 and fine.json() == "ok"
