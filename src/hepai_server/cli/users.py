"""`hepai-server user`: create and list accounts."""

from __future__ import annotations

import sys

import click

from hepai_server.cli.context import database
from hepai_server.security import credentials
from hepai_server.services import accounts


@click.group()
def user() -> None:
    """Manage user accounts."""


@user.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@click.option("--group", "groups", multiple=True, help="A group to join; repeatable.")
@click.option("--email", default=None, help="The user's e-mail address.")
def create(name: str, admin: bool, groups: tuple[str, ...], email: str | None) -> None:
    """Create user NAME. The password is read from stdin; with none given, one is generated
    and printed once."""
    password = "" if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    generated = not password
    if generated:
        password = credentials.new_password()
    with database() as session:
        accounts.create_user(
            session,
            username=name,
            password=password,
            level="admin" if admin else "user",
            groups=groups,
            email=email,
        )
    click.echo(f"created user {name}" + (" (admin)" if admin else ""), err=True)
    if generated:
        click.echo(password)


@user.command("list")
def list_() -> None:
    """List users with their level and groups."""
    with database() as session:
        for row in accounts.list_users(session):
            groups = ",".join(sorted(group.name for group in row.groups)) or "-"
            status = "disabled" if row.disabled else "active"
            click.echo(f"{row.username}\t{row.level}\t{groups}\t{row.email or '-'}\t{status}")
