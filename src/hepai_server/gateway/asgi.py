"""Small helpers for the raw ASGI endpoints on the hot path: headers, bounded bodies, JSON replies.

The hot routes skip Starlette's Request/Response objects; each helper here is the few lines they
would have cost, without the allocation.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any

import orjson

from hepai_server.errors import HepAIError, InvalidRequest, PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE = (b"content-type", b"application/json")
#: Where the edge middleware leaves each request's id in its scope.
REQUEST_ID_KEY = "hepai.request_id"


class ClientDisconnected(Exception):
    """The client went away before the request body arrived."""


class RequestIds:
    """Request ids from a random per-process prefix and a counter.

    A fresh random token per request cost a getrandom(2) call each, and ids need to be unique,
    not secret. 56 random bits keep two processes from sharing a prefix; a forked child draws
    its own (see ``register_at_fork`` below), or it would repeat its parent's ids.
    """

    __slots__ = ("_count", "_prefix")

    _prefix: str
    _count: itertools.count[int]

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self._prefix = "req-" + secrets.token_hex(7)
        self._count = itertools.count()

    def __call__(self) -> str:
        # 14 + 10 hex digits, as long as the random ids were. Past 16**10 ids the counter only
        # grows a digit: still unique, since the prefix alone tells processes apart.
        return f"{self._prefix}{next(self._count):010x}"


#: A fresh request id: ``req-`` and 24 (or, after 16**10 of them, more) hex digits.
new_request_id = RequestIds()
os.register_at_fork(after_in_child=new_request_id.reseed)


def client_request_id(value: bytes | None) -> str | None:
    """The client's own X-Request-ID when it is a sane token (kept beside the platform's)."""
    if value and len(value) <= 64 and value.isascii() and value.replace(b"-", b"").isalnum():
        return value.decode()
    return None


def refuse_declared(declared: int | None, limit: int) -> None:
    """413 before reading a body whose declared size is already too large."""
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the {limit}-byte limit")


async def body_chunks(receive: Receive, *, limit: int) -> AsyncIterator[bytes]:
    """The request body as it arrives, refusing more than ``limit`` bytes in all."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
        yield chunk
        if not message.get("more_body", False):
            return


async def read_body(receive: Receive, *, declared: int | None, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes (unread, when the size is declared)."""
    refuse_declared(declared, limit)
    chunks = [chunk async for chunk in body_chunks(receive, limit=limit)]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return value


def parse_content_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18:
        raise InvalidRequest("invalid Content-Length header")
    return int(value)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    *,
    request_id: str,
    content_type: bytes = b"application/json",
    close: bool = False,
    extra: dict[str, str] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    if extra:
        headers += [(name.encode(), value.encode()) for name, value in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: HepAIError, *, request_id: str) -> None:
    # After a 413 the rest of the body is still on its way: closing the connection spares
    # reading and discarding it.
    close = isinstance(error, PayloadTooLarge)
    extra = dict(error.headers or {})
    if error.retry_after is not None:
        extra.setdefault("retry-after", str(error.retry_after))
    await send_bytes(
        send, error.status, error.to_json(), request_id=request_id, close=close, extra=extra
    )


class DisconnectWatch:
    """Cancels the current task the moment the client disconnects.

    Use it around work that should stop with the client (an upstream stream):

        async with DisconnectWatch(receive) as watch:
            try:
                ...
            except asyncio.CancelledError:
                if not watch.fired:
                    raise
                ...  # the client left: clean up, record it

    When it fired, the cancellation is withdrawn (``uncancel``) so the task carries on normally.
    Send through ``watch.guard(send)``: once the response is complete the server reports a
    "disconnect" too, and that one must not count.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task = asyncio.current_task()
        self._watcher: asyncio.Task[None] | None = None
        self._complete = False
        self.fired = False

    def guard(self, send: Send) -> Send:
        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._complete = True
            await send(message)

        return guarded

    async def __aenter__(self) -> DisconnectWatch:
        self._watcher = asyncio.create_task(self._watch())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._watcher is not None
        self._watcher.cancel()
        # The cancelled watcher's frame refers back here; cutting the links now spares the
        # cycle collector a dozen objects per stream.
        self._watcher = None
        self._task = None

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if self._complete:
            return
        self.fired = True
        assert self._task is not None
        self._task.cancel()

    def withdraw(self) -> None:
        """Take back the cancellation this watch caused, once it has been handled."""
        task = asyncio.current_task()
        assert task is not None
        task.uncancel()


class Collected:
    """An answer kept instead of sent: the ``send`` and ``receive`` of a call the platform
    makes for itself (a tool call of its MCP endpoint, a background job), with no client
    connection behind it."""

    __slots__ = ("_chunks", "headers", "status")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            self._chunks.append(message.get("body", b""))

    async def receive(self) -> Message:
        """Never a disconnect: nobody is there to leave."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key.lower() == name), None)
