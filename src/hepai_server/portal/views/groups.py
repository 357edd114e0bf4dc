"""Admin → groups: every group with its size; one group's members and the models its members
may use through it; make a group, add and remove members."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.tables import Group, User
from hepai_server.errors import InvalidRequest, NotFound
from hepai_server.portal.notices import describe
from hepai_server.portal.views.models import available_models
from hepai_server.portal.web import Portal, done, gateway, record_action
from hepai_server.services import accounts, directory
from hepai_server.services.accounts import NAME, Caller


def member_of(group: str) -> Caller:
    """Someone in ``group`` and no other: what the group itself opens."""
    return Caller(
        key_id=0,
        user_id=0,
        username="",
        email=None,
        is_admin=False,
        groups=frozenset({group}),
        allowed_models=None,
        expires_at=None,
    )


async def groups_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    rows = await gateway(request).transact(directory.groups_with_counts)
    return portal.render(request, "admin_groups.html", viewer=viewer, groups=rows, error=None)


async def create_group(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    name = str(form.get("name") or "").strip()
    if not NAME.match(name):
        rows = await gateway(request).transact(directory.groups_with_counts)
        return portal.render(
            request,
            "admin_groups.html",
            viewer=viewer,
            groups=rows,
            error="errors.group",
            typed=name,
            status=400,
        )

    def work(session: Session) -> None:
        accounts.ensure_group(session, name)
        record_action(session, viewer, request, "group.create", name)

    await gateway(request).transact(work)
    return await done(request, viewer, f"/admin/groups/{name}", "groups.created", name=name)


async def group_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    name = request.path_params["name"]

    def work(session: Session) -> dict[str, Any]:
        group = session.scalar(select(Group).where(Group.name == name))
        if group is None:
            raise NotFound(f"no group {name!r}")
        return {"group": group, "members": list(directory.members(session, group))}

    gw = gateway(request)
    context = await gw.transact(work)
    models = await available_models(gw, member_of(name))
    return portal.render(
        request, "admin_group.html", viewer=viewer, models=models, error=None, **context
    )


async def change_group(request: Request, portal: Portal) -> Response:
    """Add a member (by username) or remove one."""
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    name = request.path_params["name"]
    action = str(form.get("action") or "")
    username = str(form.get("username") or "").strip()

    def work(session: Session) -> None:
        group = session.scalar(select(Group).where(Group.name == name))
        if group is None:
            raise NotFound(f"no group {name!r}")
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            raise InvalidRequest(f"no user {username!r}", param="username")
        names = [g.name for g in user.groups]
        if action == "add":
            accounts.set_groups(session, user=user, groups=[*names, name])
        elif action == "remove":
            accounts.set_groups(session, user=user, groups=[g for g in names if g != name])
        else:
            raise InvalidRequest(f"unknown action {action!r}", param="action")
        record_action(session, viewer, request, f"group.{action}_member", name, {"user": username})

    gw = gateway(request)
    try:
        await gw.transact(work)
    except InvalidRequest as error:
        target = f"/admin/groups/{name}"
        return await done(request, viewer, target, describe(error), ok=False, name=username)
    await gw.callers_changed()
    message = "groups.member_added" if action == "add" else "groups.member_removed"
    return await done(request, viewer, f"/admin/groups/{name}", message, name=username)
