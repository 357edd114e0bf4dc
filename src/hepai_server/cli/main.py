"""The `hepai-server` command group; each subcommand group lives in its own module."""

from __future__ import annotations

import click

from hepai_server import __version__
from hepai_server.cli import (
    db,
    files,
    governance,
    groups,
    keys,
    mcp,
    serve,
    usage,
    users,
    worker,
)


@click.group()
@click.version_option(__version__, prog_name="hepai-server")
def cli() -> None:
    """The HepAI model and tool API platform."""


cli.add_command(serve.serve)
cli.add_command(db.db)
cli.add_command(users.user)
cli.add_command(keys.key)
cli.add_command(worker.worker)
cli.add_command(files.files)
cli.add_command(governance.price)
cli.add_command(governance.budget)
cli.add_command(governance.limit)
cli.add_command(usage.usage)
cli.add_command(groups.group)
cli.add_command(mcp.mcp)
