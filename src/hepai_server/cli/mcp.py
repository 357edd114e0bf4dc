"""`hepai-server mcp`: the external MCP servers whose tools the platform's MCP endpoint offers
to chosen groups. Their URLs are checked by the egress guard as an admin's worker's address is,
and every change is audited."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from hepai_server.cli.context import database
from hepai_server.config import Settings
from hepai_server.security.credentials import Sealer, signing_secret
from hepai_server.security.egress import EgressPolicy, parse_server_url
from hepai_server.services import audit, mcp_servers

CLI = "cli"


@click.group()
def mcp() -> None:
    """Register the external MCP servers whose tools groups may use."""


@mcp.command("add")
@click.argument("name")
@click.argument("url")
@click.option(
    "--group", "groups", multiple=True, required=True, help="A group that may use it ('all')."
)
@click.option(
    "--header", "headers", multiple=True, help="A header sent with every call: 'Name: value'."
)
def add(name: str, url: str, groups: tuple[str, ...], headers: tuple[str, ...]) -> None:
    """Offer the tools of the MCP server at URL (Streamable HTTP) as NAME__tool."""
    settings = Settings()
    sent: dict[str, str] = {}
    for header in headers:
        key, colon, value = header.partition(":")
        if not colon or not key.strip():
            raise click.BadParameter(f"{header!r} is not 'Name: value'", param_hint="--header")
        sent[key.strip()] = value.strip()
    with database() as session:
        address = parse_server_url(url)
        EgressPolicy.from_strings(settings.worker_allowed_networks).check(address, trusted=True)
        mcp_servers.add_server(
            session,
            name=name,
            url=str(address),
            headers=sent,
            groups=groups,
            sealer=Sealer(signing_secret(settings)),
            now=datetime.now(UTC),
        )
        audit.record(
            session,
            actor_id=None,
            actor=CLI,
            action="mcp_server.add",
            target=name,
            detail={"url": str(address), "groups": sorted(set(groups))},
        )
    click.echo(f"MCP server {name} added: its tools are {name}__<tool>", err=True)


@mcp.command("list")
def list_() -> None:
    """The registered servers: name, URL, groups."""
    with database() as session:
        for server in mcp_servers.list_servers(session):
            view = mcp_servers.server_view(server)
            sealed = " (with headers)" if view["headers"] else ""
            click.echo(f"{server.name}\t{server.url}\t{','.join(server.groups)}{sealed}")


@mcp.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Stop offering the tools of the server NAME."""
    with database() as session:
        mcp_servers.remove_server(session, name=name)
        audit.record(session, actor_id=None, actor=CLI, action="mcp_server.remove", target=name)
    click.echo(f"MCP server {name} removed", err=True)
