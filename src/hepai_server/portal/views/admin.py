"""Admin pages: users (search, paging, one user's page) and the audit log of what admins did.

Every change is recorded in the audit log in the same transaction, and bumps the shared
generation so API keys of a changed account are looked up afresh on their next request.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.tables import User
from hepai_server.errors import Conflict, InvalidRequest, NotFound
from hepai_server.portal import sessions
from hepai_server.portal.flash import Flash
from hepai_server.portal.notices import describe
from hepai_server.portal.web import (
    Portal,
    Viewer,
    done,
    gateway,
    leave_flash,
    local_path,
    record_action,
    redirect,
)
from hepai_server.security import credentials
from hepai_server.services import accounts, directory

#: Users and audit events a page lists.
PAGE_SIZE = 50


def parse_groups(raw: object) -> list[str]:
    """Group names separated by spaces or commas (a Chinese keyboard's comma too)."""
    return [name for name in re.split(r"[\s,\uff0c]+", str(raw or "")) if name]


def page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return int(raw) if raw.isdigit() and len(raw) < 7 else 1


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
    error: str | None = None,
    detail: str | None = None,
    status: int = 200,
    typed: dict[str, str] | None = None,
) -> Response:
    """The list; after a refused form, with the error and what was typed (not the password)."""
    text = request.query_params.get("q", "").strip()[:128]
    number = page_number(request)

    def work(session: Session) -> dict[str, Any]:
        return {
            "found": directory.search_users(session, text=text, number=number, size=PAGE_SIZE),
            "groups": [group.name for group in accounts.list_groups(session)],
        }

    context = await gateway(request).transact(work)
    return portal.render(
        request,
        "admin_users.html",
        viewer=viewer,
        error=error,
        detail=detail,
        status=status,
        levels=accounts.LEVELS,
        q=text,
        typed=typed or {"username": "", "email": "", "level": "user", "groups": ""},
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
        shown = password if generated else None
        notice = Flash("admin.user_created", {"name": username}, secret=shown)
        leave_flash(session, request, viewer, notice)

    try:
        await gateway(request).transact(work)
    except (InvalidRequest, Conflict) as error:
        typed = {
            "username": username,
            "email": email or "",
            "level": level,
            "groups": ", ".join(groups),
        }
        return await render_users(
            request,
            portal,
            viewer,
            error=describe(error),
            detail=error.message,
            status=400,
            typed=typed,
        )
    return redirect("/admin/users")


async def user_page(request: Request, portal: Portal) -> Response:
    """One account: its level, groups and state, to change; its keys and last sessions."""
    viewer = await portal.viewer(request, admin=True)
    user_id: int = request.path_params["user_id"]

    def work(session: Session) -> dict[str, Any]:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound("no such user")
        return {
            "user": user,
            "keys": list(accounts.list_api_keys(session, user=user)),
            "groups": [group.name for group in accounts.list_groups(session)],
        }

    context = await gateway(request).transact(work)
    return portal.render(
        request, "admin_user.html", viewer=viewer, levels=accounts.LEVELS, **context
    )


async def update_user(request: Request, portal: Portal) -> Response:
    """Set a user's level and groups, or disable or enable the account."""
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    user_id: int = request.path_params["user_id"]
    action = str(form.get("action") or "")
    back = local_path(str(form.get("back") or ""), "/admin/users")
    if user_id == viewer.user_id and action != "save":
        return await render_users(request, portal, viewer, error="admin.not_self", status=400)

    def work(session: Session) -> str:
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
        return user.username

    gw = gateway(request)
    try:
        name = await gw.transact(work)
    except InvalidRequest as error:
        return await render_users(
            request, portal, viewer, error=describe(error), detail=error.message, status=400
        )
    await gw.callers_changed()
    return await done(request, viewer, back, f"admin.user_{action}d", name=name)


def parse_day(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


async def audit_page(request: Request, portal: Portal) -> Response:
    """Admin actions, newest first, filtered by actor, kind, target and days (the viewer's)."""
    viewer = await portal.viewer(request, admin=True)
    query = request.query_params
    zone = portal.zone(request)
    first, last = parse_day(query.get("from", "")), parse_day(query.get("to", ""))
    chosen = directory.AuditFilter(
        actor=query.get("actor", "").strip()[:128],
        action=query.get("action", "").strip()[:64],
        target=query.get("target", "").strip()[:256],
        since=datetime.combine(first, time(), zone.info).astimezone(UTC) if first else None,
        until=datetime.combine(last + timedelta(days=1), time(), zone.info).astimezone(UTC)
        if last
        else None,
    )
    before = query.get("before", "")
    before_id = int(before) if before.isdigit() and len(before) < 12 else None

    def work(session: Session) -> dict[str, Any]:
        events, more = directory.audit_events(session, chosen, before_id=before_id, size=PAGE_SIZE)
        return {"events": events, "more": more, "actions": directory.audit_actions(session)}

    context = await gateway(request).transact(work)
    typed = {
        "actor": chosen.actor,
        "action": chosen.action,
        "target": chosen.target,
        "from": first.isoformat() if first else "",
        "to": last.isoformat() if last else "",
    }
    return portal.render(request, "admin_audit.html", viewer=viewer, typed=typed, **context)
