"""`hepai-server key`: create, list and revoke API keys."""

from __future__ import annotations

from datetime import timedelta

import click

from hepai_server.cli.context import database
from hepai_server.services import accounts


@click.group()
def key() -> None:
    """Manage API keys."""


@key.command("create")
@click.option("--user", "username", required=True, help="The user the key acts for.")
@click.option("--name", default="default", show_default=True, help="A name to recognise it by.")
@click.option(
    "--expires-days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Days until the key stops working (default: never).",
)
@click.option(
    "--models",
    default=None,
    help="Comma-separated model ids the key is limited to (default: all the user may call).",
)
@click.option(
    "--scope",
    type=click.Choice(accounts.SCOPES),
    default=accounts.FULL,
    show_default=True,
    help="inference: models, tools and files only; full: also the account routes and "
    "registering workers.",
)
def create(
    username: str, name: str, expires_days: float | None, models: str | None, scope: str
) -> None:
    """Create a key and print it, alone, on stdout. It is shown only this once."""
    allowed = [m.strip() for m in models.split(",") if m.strip()] if models is not None else None
    with database() as session:
        _row, secret = accounts.create_api_key(
            session,
            user=accounts.get_user(session, username),
            name=name,
            expires_in=timedelta(days=expires_days) if expires_days is not None else None,
            allowed_models=allowed,
            scope=scope,
        )
    click.echo(secret)


@key.command("list")
@click.option("--user", "username", default=None, help="Only this user's keys.")
def list_(username: str | None) -> None:
    """List keys by id, prefix, owner, name, expiry and state. Secrets are never shown."""
    with database() as session:
        owner = accounts.get_user(session, username) if username else None
        for row in accounts.list_api_keys(session, user=owner):
            expires = row.expires_at.isoformat(timespec="seconds") if row.expires_at else "never"
            state = "revoked" if row.revoked_at else "active"
            models = ",".join(row.allowed_models) if row.allowed_models is not None else "*"
            click.echo(
                f"{row.id}\t{row.prefix}…\t{row.user.username}\t{row.name}\t{expires}\t{state}"
                f"\t{models}\t{row.scope}"
            )


@key.command("revoke")
@click.argument("key_id", type=int)
def revoke(key_id: int) -> None:
    """Revoke key KEY_ID (see `key list`); servers on this machine refuse it at once."""
    with database(changes_callers=True) as session:
        row = accounts.revoke_api_key(session, key_id=key_id)
    click.echo(f"revoked key {row.id} ({row.prefix}…)", err=True)
