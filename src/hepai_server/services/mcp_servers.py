"""External MCP servers: the tool sources admins register for chosen groups, their headers kept
sealed, and which of them a caller may use."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from hepai_server.db.tables import McpServer
from hepai_server.errors import Conflict, InvalidRequest, NotFound
from hepai_server.security.credentials import Sealer
from hepai_server.services.accounts import Caller

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
#: The group that makes a server's tools everyone's.
EVERYONE = "all"


@dataclass(frozen=True, slots=True)
class McpSource:
    """A registered server as the platform calls it."""

    name: str
    url: str
    headers: dict[str, str] = field(repr=False)


def add_server(
    session: Session,
    *,
    name: str,
    url: str,
    headers: dict[str, str],
    groups: Sequence[str],
    sealer: Sealer,
    now: datetime,
) -> McpServer:
    """Register a server (an admin's act); ``url`` as the egress guard admitted it."""
    if not NAME.match(name):
        raise InvalidRequest(
            "an MCP server's name is 1-32 lowercase letters, digits, - and _", param="name"
        )
    if session.scalar(select(McpServer).where(McpServer.name == name)) is not None:
        raise Conflict(f"an MCP server named {name!r} exists already", param="name")
    if not groups:
        raise InvalidRequest("name the groups that may use it ('all' for everyone)", param="groups")
    for key, value in headers.items():
        if not key or any(c in key + value for c in "\r\n"):
            raise InvalidRequest("a header is a name and a one-line value", param="headers")
    server = McpServer(
        name=name,
        url=url,
        headers_sealed=sealer.seal(orjson.dumps(headers).decode()) if headers else None,
        groups=sorted(set(groups)),
        enabled=True,
        created_at=now,
        updated_at=now,
    )
    session.add(server)
    session.flush()
    return server


def remove_server(session: Session, *, name: str) -> None:
    server = session.scalar(select(McpServer).where(McpServer.name == name))
    if server is None:
        raise NotFound(f"no MCP server named {name!r}")
    session.delete(server)


def list_servers(session: Session) -> Sequence[McpServer]:
    return session.scalars(select(McpServer).order_by(McpServer.name)).all()


def server_view(server: McpServer) -> dict[str, object]:
    """What an admin sees of a server: never its headers' values."""
    return {
        "name": server.name,
        "url": server.url,
        "groups": server.groups,
        "enabled": server.enabled,
        "headers": bool(server.headers_sealed),
        "created_at": int(server.created_at.timestamp()),
    }


def sources_for(session: Session, *, caller: Caller, sealer: Sealer) -> list[McpSource]:
    """The enabled servers whose tools the caller may use: admins all, others by group."""
    sources = []
    for server in list_servers(session):
        groups = set(server.groups)
        allowed = caller.is_admin or EVERYONE in groups or not groups.isdisjoint(caller.groups)
        if not server.enabled or not allowed:
            continue
        headers: dict[str, str] = {}
        if server.headers_sealed and (opened := sealer.unseal(server.headers_sealed)):
            headers = orjson.loads(opened)
        sources.append(McpSource(server.name, server.url, headers))
    return sources
