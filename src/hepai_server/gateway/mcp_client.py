"""Calling an external MCP server (Streamable HTTP) that an admin registered as a tool source.

The platform reaches it the way it reaches a worker (security/egress.py): its URL was parsed
once, at registration, and is used as parsed; calls go through the pool of the platform's
trusted owners, which checks the address of every connection it opens after DNS; redirects are
never followed. Each listing or call is a short session of its own: ``initialize``, the
``initialized`` notification, the request, and a ``DELETE`` of the session if the server
issued one. Answers may come as JSON or as an event stream; the one that answers the request
is taken.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import aiohttp
import orjson

from hepai_server import __version__
from hepai_server.errors import UpstreamError
from hepai_server.protocol.mcp import PROTOCOL_VERSIONS
from hepai_server.protocol.sse import EventSplitter, event_data, split_events
from hepai_server.security.egress import WorkerAddress

SESSION_HEADER = "mcp-session-id"
#: Largest answer read from an external server.
MAX_ANSWER = 16 * 1024 * 1024
#: Most pages of tools read from one server.
MAX_PAGES = 20


class McpClient:
    """One external server, called through ``session``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        address: WorkerAddress,
        headers: dict[str, str],
        *,
        name: str,
    ) -> None:
        self._session = session
        self._url = str(address)
        self._headers = {
            **headers,
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
        }
        self._name = name
        self._ids = itertools.count(1)

    async def list_tools(self) -> list[dict[str, Any]]:
        """Every tool the server offers (all pages)."""
        tools: list[dict[str, Any]] = []
        async with self._opened() as headers:
            cursor: str | None = None
            for _ in range(MAX_PAGES):
                page = await self._request(
                    "tools/list", {"cursor": cursor} if cursor else {}, headers
                )
                tools += [t for t in page.get("tools") or () if isinstance(t, dict)]
                cursor = page.get("nextCursor")
                if not isinstance(cursor, str) or not cursor:
                    break
        return tools

    async def call_tool(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The server's result of one tool call (an error result stays a result)."""
        async with self._opened() as headers:
            return await self._request(
                "tools/call", {"name": tool, "arguments": arguments}, headers
            )

    @contextlib.asynccontextmanager
    async def _opened(self) -> Any:
        """A session with the server: its headers for every request inside it."""
        headers = dict(self._headers)
        ident = next(self._ids)
        message = {
            "jsonrpc": "2.0",
            "id": ident,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSIONS[0],
                "capabilities": {},
                "clientInfo": {"name": "hepai-server", "version": __version__},
            },
        }
        async with self._post(message, headers) as response:
            answer = await self._answer(response, ident)
            if session := response.headers.get(SESSION_HEADER):
                headers[SESSION_HEADER] = session
        version = answer.get("protocolVersion")
        if version not in PROTOCOL_VERSIONS:
            raise UpstreamError(f"MCP server {self._name} speaks protocol {version!r} only")
        headers["mcp-protocol-version"] = version
        notice = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with self._post(notice, headers) as response:
            if response.status >= 400:
                raise UpstreamError(f"MCP server {self._name} refused the session")
        try:
            yield headers
        finally:
            if SESSION_HEADER in headers:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with self._session.delete(
                        self._url, headers=headers, allow_redirects=False
                    ):
                        pass

    async def _request(
        self, method: str, params: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any]:
        ident = next(self._ids)
        message = {"jsonrpc": "2.0", "id": ident, "method": method, "params": params}
        async with self._post(message, headers) as response:
            return await self._answer(response, ident)

    def _post(self, message: dict[str, Any], headers: dict[str, str]) -> Any:
        return self._session.post(
            self._url, data=orjson.dumps(message), headers=headers, allow_redirects=False
        )

    async def _answer(self, response: aiohttp.ClientResponse, ident: int) -> dict[str, Any]:
        """The result of request ``ident``, from a JSON answer or the event that carries it."""
        if response.status >= 300:
            detail = (await response.content.read(300)).decode("utf-8", "replace")
            raise UpstreamError(f"MCP server {self._name} answered {response.status}: {detail}")
        if "text/event-stream" in response.headers.get("content-type", ""):
            splitter, size = EventSplitter(), 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if size > MAX_ANSWER:
                    break
                for event in split_events(splitter.feed(chunk)):
                    message = _loads(event_data(event))
                    if isinstance(message, dict) and message.get("id") == ident:
                        return _outcome(message, self._name)
            raise UpstreamError(f"MCP server {self._name} ended its stream without an answer")
        # read(n) gives what has arrived so far, not n bytes: read to the end, within the bound.
        chunks, size = [], 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > MAX_ANSWER:
                raise UpstreamError(
                    f"MCP server {self._name} sent an answer over {MAX_ANSWER} bytes"
                )
            chunks.append(chunk)
        message = _loads(b"".join(chunks))
        if not isinstance(message, dict):
            raise UpstreamError(f"MCP server {self._name} sent an answer that is not JSON-RPC")
        return _outcome(message, self._name)


def _loads(raw: bytes | None) -> Any:
    try:
        return orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None


def _outcome(message: dict[str, Any], name: str) -> dict[str, Any]:
    if isinstance(error := message.get("error"), dict):
        raise UpstreamError(f"MCP server {name}: {str(error.get('message'))[:300]}")
    value = message.get("result")
    if not isinstance(value, dict):
        raise UpstreamError(f"MCP server {name} sent no result")
    return value
