"""Admin pages: users and groups, and the audit log of what admins did.

Every change is recorded in the audit log in the same transaction, and bumps the shared
generation so API keys of a changed account are looked up afresh on their next request.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.tables import User
from hepai_server.errors import Conflict, InvalidRequest, NotFound
from hepai_server.portal import sessions
from hepai_server.portal.web import Portal, Viewer, gateway, record_action, redirect
from hepai_server.security import credentials
from hepai_server.services import accounts, audit


def parse_groups(raw: object) -> list[str]:
    """Group names separated by spaces or commas (a Chinese keyboard's comma too)."""
    return [name for name in re.split(r"[\s,\uff0c]+", str(raw or "")) if name]


async def admin_home(request: Request, portal: Portal) -> Response:
    await portal.viewer(request, admin=True)
    return redirect("/admin/users")


async def users_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    return await render_users(request, portal, viewer)


async def render_users(
    request: Request,
    portal: Portal,
    viewer: Viewer,
    *,
    created: tuple[str, str | None] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    def work(session: Session) -> dict[str, Any]:
        return {
            "users": list(accounts.list_users(session)),
            "groups": [group.name for group in accounts.list_groups(session)],
        }

    context = await gateway(request).transact(work)
    return portal.render(
        request,
        "admin_users.html",
        viewer=viewer,
        created=created,
        error=error,
        status=status,
        levels=accounts.LEVELS,
        **context,
    )


async def create_user(request: Request, portal: Portal) -> Response:
    """A new account; with no password given one is generated and shown once."""
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "") or credentials.new_password()
    generated = not form.get("password")
    level = str(form.get("level") or "user")
    groups = parse_groups(form.get("groups"))
    email = str(form.get("email") or "").strip() or None

    def work(session: Session) -> None:
        user = accounts.create_user(
            session, username=username, password=password, level=level, groups=groups, email=email
        )
        detail = {"level": level, "groups": groups, "email": email}
        record_action(session, viewer, request, "user.create", user.username, detail)

    try:
        await gateway(request).transact(work)
    except (InvalidRequest, Conflict) as error:
        return await render_users(request, portal, viewer, error=error.message, status=400)
    shown = password if generated else None
    return await render_users(request, portal, viewer, created=(username, shown), status=201)


async def update_user(request: Request, portal: Portal) -> Response:
    """Set a user's level and groups, or disable or enable the account."""
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    user_id: int = request.path_params["user_id"]
    action = str(form.get("action") or "")
    if user_id == viewer.user_id and action != "save":
        return await render_users(request, portal, viewer, error="admin.not_self", status=400)

    def work(session: Session) -> None:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound("no such user")
        detail: dict[str, Any]
        if action == "disable":
            accounts.disable_user(session, user=user)
            sessions.end_all(session, user_id=user.id)
            detail = {}
        elif action == "enable":
            accounts.enable_user(session, user=user)
            detail = {}
        elif action == "save":
            if "groups" not in form or "level" not in form:
                raise InvalidRequest("saving a user takes its level and groups", param="groups")
            level = str(form.get("level"))
            if user.id == viewer.user_id and level != "admin":
                raise InvalidRequest("an admin cannot demote their own account", param="level")
            groups = parse_groups(form.get("groups"))
            accounts.set_level(session, user=user, level=level)
            accounts.set_groups(session, user=user, groups=groups)
            detail = {"level": level, "groups": groups}
        else:
            raise InvalidRequest(f"unknown action {action!r}", param="action")
        record_action(session, viewer, request, f"user.{action}", user.username, detail)

    gw = gateway(request)
    try:
        await gw.transact(work)
    except InvalidRequest as error:
        return await render_users(request, portal, viewer, error=error.message, status=400)
    await gw.callers_changed()
    return redirect("/admin/users")


async def audit_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    events = await gateway(request).transact(lambda s: list(audit.recent(s)))
    return portal.render(request, "admin_audit.html", viewer=viewer, events=events)
