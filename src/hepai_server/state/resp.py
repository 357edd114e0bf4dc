"""One pipelined connection to Redis for the limiter's hot path: commands written as they
come, replies parsed by hiredis and handed back in order.

The limiter calls Redis for every batch of requests, on the gateway's only core. redis-py's
asyncio client spends about 95 µs of CPU on a call (its pool, health checks and per-read
timeouts); this connection spends about 37 (``benchmarks/RESULTS.md``, "what limits
cost"). It does only what the limiter and the readiness probe need: connect (TLS and a Unix
socket too), authenticate, select the database, run scripts by their digest, and fail every
waiting call at once when the connection is lost, so none waits for a reply that will not
come. The next call connects again. Everything else (pub/sub for the catalog's broadcasts)
keeps using redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis


class ReplyError(Exception):
    """Redis answered a command with an error."""


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport, so no isinstance).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            future = self._waiting.popleft()
            if future.done():  # its caller gave up; the reply is still its own
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(ReplyError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError(f"the connection to Redis was lost: {exc}"))

    def send(self, args: tuple[bytes | str | int, ...]) -> asyncio.Future[Any]:
        assert self.transport is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.transport.write(pack(args))
        self._waiting.append(future)
        return future


def pack(args: tuple[bytes | str | int, ...]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Address:
    """Where a Redis URL points, as redis-py reads it: ``redis://[[user]:password@]host[:port]
    [/db]``, ``rediss://`` for TLS, ``unix://[[user]:password@]/path[?db=N]``."""

    host: str = "localhost"
    port: int = 6379
    socket: str | None = None
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def parse(cls, url: str) -> Address:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL (redis://, rediss:// or unix://): {parts.scheme}")
        query = parse_qs(parts.query)
        unix = parts.scheme == "unix"
        # As redis-py: ?db= first, then the path (of a TCP URL; a socket's path is its file).
        db = query.get("db", [""])[0] or ("" if unix else parts.path.strip("/"))
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or 6379,
            socket=parts.path if unix else None,
            tls=parts.scheme == "rediss",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            db=int(db or 0),
        )


class Connection:
    """Calls to the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``, with its
    credentials and database), each failing after ``timeout`` seconds without a reply."""

    def __init__(self, url: str, *, timeout: float = 0.5) -> None:
        self._address = Address.parse(url)
        self._timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(self, *args: bytes | str | int) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        future = protocol.send(args)
        try:
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            # Redis (or the network to it) is stuck: every call waiting on this connection
            # fails now rather than each after its own wait, and the next call connects again.
            self._drop(protocol)
            raise ConnectionError(f"Redis did not answer within {self._timeout} s") from None

    async def script(self, script: Script, *args: bytes | str | int) -> Any:
        """Run ``script`` by its digest, loading it first where Redis does not know it (a
        restarted or replaced Redis)."""
        try:
            return await self.call(b"EVALSHA", script.sha, 0, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.call(b"SCRIPT", b"LOAD", script.source)
        return await self.call(b"EVALSHA", script.sha, 0, *args)

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None and not self._protocol.lost:
                return self._protocol  # another call connected while this one waited
            try:
                async with asyncio.timeout(self._timeout):
                    protocol = await self._open()
            except TimeoutError:
                raise ConnectionError(f"Redis did not answer within {self._timeout} s") from None
            except OSError as exc:
                raise ConnectionError(f"cannot reach Redis: {exc}") from exc
            self._protocol = protocol
            return protocol

    async def _open(self) -> _Protocol:
        """A new connection, authenticated and on its database."""
        address, loop = self._address, asyncio.get_running_loop()
        if address.socket:
            _, protocol = await loop.create_unix_connection(_Protocol, address.socket)
        else:
            tls = ssl.create_default_context() if address.tls else None
            _, protocol = await loop.create_connection(
                _Protocol, address.host, address.port, ssl=tls
            )
        handshake: list[tuple[str | int, ...]] = []
        if address.password is not None:
            handshake.append(("AUTH", address.username or "default", address.password))
        if address.db:
            handshake.append(("SELECT", address.db))
        try:
            for command in handshake:
                try:
                    await protocol.send(command)
                except ReplyError as exc:
                    raise ConnectionError(f"Redis answered {command[0]} with {exc}") from None
        except BaseException:
            self._drop(protocol)
            raise
        return protocol

    def _drop(self, protocol: _Protocol) -> None:
        if protocol.transport is not None:
            protocol.transport.abort()
        protocol.connection_lost(None)
        if self._protocol is protocol:
            self._protocol = None

    async def close(self) -> None:
        if self._protocol is not None:
            self._drop(self._protocol)


class Script:
    """A Lua script and its digest."""

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest().encode()
