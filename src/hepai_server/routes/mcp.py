"""The admin API of external MCP servers (the tool sources the MCP endpoint offers to chosen
groups): list, register, remove. Admins only, with a key of full access; every change audited."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hepai_server.errors import InvalidRequest, PermissionDenied
from hepai_server.routes.http import authenticate, json_body, json_response
from hepai_server.security.egress import parse_server_url
from hepai_server.services import audit, mcp_servers
from hepai_server.services.accounts import Caller


def _admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise PermissionDenied("only an admin may manage MCP servers")


async def list_servers(request: Request) -> Response:
    gateway, caller = await authenticate(request, full=True)
    _admin(caller)
    servers = await gateway.transact(
        lambda s: [mcp_servers.server_view(server) for server in mcp_servers.list_servers(s)]
    )
    return json_response({"object": "list", "data": servers})


async def add_server(request: Request) -> Response:
    """``{"name", "url", "groups": [...], "headers": {...}}``: the URL is checked by the egress
    guard now (as an admin's worker's address is) and its every connection later."""
    gateway, caller = await authenticate(request, full=True)
    _admin(caller)
    body = await json_body(request)
    groups, headers = body.get("groups") or [], body.get("headers") or {}
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise InvalidRequest("'groups' is a list of group names", param="groups")
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise InvalidRequest("'headers' maps header names to strings", param="headers")
    address = parse_server_url(body.get("url"))
    await gateway.dispatcher.check(address, trusted=True)
    name, now = str(body.get("name") or ""), datetime.now(UTC)

    def add(session: Any) -> dict[str, object]:
        server = mcp_servers.add_server(
            session,
            name=name,
            url=str(address),
            headers=headers,
            groups=groups,
            sealer=gateway.sealer,
            now=now,
        )
        audit.record(
            session,
            actor_id=caller.user_id,
            actor=caller.username,
            action="mcp_server.add",
            target=name,
            detail={"url": str(address), "groups": sorted(set(groups))},
        )
        return mcp_servers.server_view(server)

    return json_response(await gateway.transact(add))


async def remove_server(request: Request) -> Response:
    gateway, caller = await authenticate(request, full=True)
    _admin(caller)
    name = request.path_params["name"]

    def remove(session: Any) -> None:
        mcp_servers.remove_server(session, name=name)
        audit.record(
            session,
            actor_id=caller.user_id,
            actor=caller.username,
            action="mcp_server.remove",
            target=name,
        )

    await gateway.transact(remove)
    return json_response({"name": name, "deleted": True})
