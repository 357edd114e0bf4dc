"""`hepai-server group`: groups, their members and their administrators (an experiment's or a
department's lead, who then manages the group without being a platform admin)."""

from __future__ import annotations

import click

from hepai_server.cli.context import database
from hepai_server.governance import groups
from hepai_server.services import accounts, audit


@click.group()
def group() -> None:
    """Manage groups and their administrators."""


@group.command("list")
def group_list() -> None:
    """Every group with its members and administrators."""
    with database() as session:
        for row in accounts.list_groups(session):
            members = ",".join(u.username for u in groups.members(session, row)) or "-"
            admins = ",".join(u.username for u in groups.admins_of(session, row)) or "-"
            click.echo(f"{row.name}\tmembers={members}\tadmins={admins}")


@group.command("admin")
@click.argument("name")
@click.argument("username")
@click.option("--remove", is_flag=True, help="No longer an administrator of the group.")
def group_admin(name: str, username: str, remove: bool) -> None:
    """Make USERNAME an administrator of group NAME (a member too), or no longer one."""
    with database(changes_callers=True) as session:
        target = accounts.ensure_group(session, name)
        user = accounts.get_user(session, username)
        groups.set_admin(session, group=target, user=user, admin=not remove)
        audit.record(
            session,
            actor_id=None,
            actor="cli",
            action="group.admin_remove" if remove else "group.admin_add",
            target=f"{name}:{username}",
        )
    click.echo(
        f"{username} {'is no longer' if remove else 'is'} an administrator of {name}", err=True
    )
