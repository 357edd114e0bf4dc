"""The MCP endpoint (``/apiv2/mcp``): the platform's tools for MCP clients, over Streamable
HTTP, authenticated with the caller's API key.

Stateless: every POST carries one JSON-RPC message and is answered with JSON (a notification
with 202), so any replica answers any request and no session outlives it; the server offers no
event stream of its own (GET and DELETE are 405, as the transport allows). ``tools/list`` lists
exactly what the caller may call (gateway/toolbox.py) and ``tools/call`` calls it, in this
request's frame: admitted against the caller's budgets and limits and recorded in one usage
row. The handshake and listings are no calls and get no row.
"""

from __future__ import annotations

from typing import Any

from hepai_server import __version__
from hepai_server.errors import InvalidRequest, MethodNotAllowed
from hepai_server.gateway.asgi import (
    Receive,
    Scope,
    Send,
    parse_content_length,
    read_body,
    send_bytes,
)
from hepai_server.gateway.frame import Exchange
from hepai_server.gateway.toolbox import call_tool, tools_for
from hepai_server.protocol import mcp
from hepai_server.protocol.mcp import INVALID_PARAMS, METHOD_NOT_FOUND, Message, RpcError
from hepai_server.services.accounts import Caller

INSTRUCTIONS = (
    "Tools of the HepAI platform: its document tools, the workers you may call and, where "
    "offered, its language models. Pass files as platform file ids (file-…) or as URLs of the "
    "platform's file service; upload them with the Files API first."
)


class McpEndpoint:
    """The handler of ``/apiv2/mcp``."""

    __slots__ = ()

    name = "mcp"

    async def __call__(
        self, exchange: Exchange, caller: Caller, scope: Scope, receive: Receive, send: Send
    ) -> None:
        exchange.recorded = False
        if scope["method"] != "POST":
            raise MethodNotAllowed(
                "this MCP endpoint is stateless: POST one JSON-RPC message a request"
            )
        version = exchange.headers.get(mcp.PROTOCOL_HEADER)
        if version is not None and version.decode("latin-1") not in mcp.PROTOCOL_VERSIONS:
            raise InvalidRequest(f"unsupported MCP protocol version {version[:32]!r}")
        raw = await read_body(
            receive,
            declared=parse_content_length(exchange.headers.get(b"content-length")),
            limit=exchange.gateway.settings.max_body_bytes,
        )
        try:
            message = mcp.parse_message(raw)
        except RpcError as exc:
            await answer(send, exchange, mcp.error(None, exc.code, exc.message), status=400)
            return
        if not message.is_request:
            # A notification (initialized, cancelled) or a response: nothing to say back.
            await send_bytes(send, 202, b"", request_id=exchange.request_id)
            return
        try:
            body = mcp.result(message.id, await self.respond(exchange, caller, message))
        except RpcError as exc:
            body = mcp.error(message.id, exc.code, exc.message)
        await answer(send, exchange, body)

    async def respond(self, exchange: Exchange, caller: Caller, message: Message) -> dict[str, Any]:
        method, params = message.method, message.params
        if method == "initialize":
            return {
                "protocolVersion": mcp.negotiate(params.get("protocolVersion")),
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "hepai-server", "version": __version__},
                "instructions": INSTRUCTIONS,
            }
        if method == "ping":
            return {}
        if method == "tools/list":
            tools = await tools_for(exchange.gateway, caller, exchange.request_id)
            return {"tools": [tool.listing() for tool in tools]}
        if method == "tools/call":
            name, arguments = params.get("name"), params.get("arguments") or {}
            if not isinstance(name, str) or not isinstance(arguments, dict):
                raise RpcError(INVALID_PARAMS, "tools/call needs a tool 'name' and 'arguments'")
            tools = await tools_for(exchange.gateway, caller, exchange.request_id)
            tool = next((tool for tool in tools if tool.name == name), None)
            if tool is None:
                # Also what a tool the caller may not use looks like: it does not exist.
                raise RpcError(INVALID_PARAMS, f"Unknown tool: {name[:128]}")
            exchange.recorded = True
            return await call_tool(exchange, caller, tool, arguments)
        raise RpcError(METHOD_NOT_FOUND, f"Method not found: {str(method)[:64]}")


async def answer(send: Send, exchange: Exchange, body: bytes, *, status: int = 200) -> None:
    await send_bytes(send, status, body, request_id=exchange.request_id)
