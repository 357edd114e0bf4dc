"""`hepai-server usage verify`: prove the ledger's totals agree with its rows."""

from __future__ import annotations

import click

from hepai_server.cli.context import database
from hepai_server.config import Settings
from hepai_server.governance.verify import disagreements


@click.group()
def usage() -> None:
    """Check the usage ledger."""


@usage.command("verify")
def verify() -> None:
    """Recompute the usage totals and every budget's spend from the usage rows; exit 0 when
    they agree with what is stored, 1 (listing the differences) when they do not."""
    zone = Settings().budget_zone
    with database() as session:
        found = disagreements(session, zone=zone)
    for line in found:
        click.echo(line)
    if found:
        raise SystemExit(1)
    click.echo("usage rows, daily totals and budget spend agree", err=True)
