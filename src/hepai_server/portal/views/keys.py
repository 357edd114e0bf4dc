"""API keys: create one (its secret shown once, on the page the form leads to), list them,
revoke one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.tables import ApiKey
from hepai_server.errors import NotFound
from hepai_server.portal.flash import Flash
from hepai_server.portal.views.models import available_models
from hepai_server.portal.web import Portal, Viewer, done, gateway, leave_flash, redirect
from hepai_server.services import accounts

#: The expiries the form offers, in days; 0 means never.
EXPIRIES = (7, 30, 90, 365, 0)
DEFAULT_EXPIRY = 90


async def keys_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    return await render_keys(request, portal, viewer)


async def render_keys(
    request: Request,
    portal: Portal,
    viewer: Viewer,
    *,
    error: str | None = None,
    status: int = 200,
    typed: dict[str, Any] | None = None,
) -> Response:
    """The page; after a refused form, with the error and what was typed."""

    def work(session: Session) -> list[ApiKey]:
        owner = accounts.get_user_by_id(session, viewer.user_id)
        return list(accounts.list_api_keys(session, user=owner))

    keys = await gateway(request).transact(work)
    models = await available_models(gateway(request), viewer.caller())
    return portal.render(
        request,
        "keys.html",
        viewer=viewer,
        keys=sorted(keys, key=lambda key: (key.revoked_at is not None, -key.id)),
        models=models,
        expiries=EXPIRIES,
        error=error,
        status=status,
        typed=typed
        or {
            "name": "",
            "expiry_days": DEFAULT_EXPIRY,
            "models": set(),
            "scope": accounts.INFERENCE,
        },
    )


async def create_key(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    form = await portal.form(request, viewer)
    name = str(form.get("name") or "").strip() or "default"
    try:
        days = int(str(form.get("expiry_days") or DEFAULT_EXPIRY))
    except ValueError:
        days = -1
    scope = str(form.get("scope") or accounts.INFERENCE)
    chosen = {str(value) for value in form.getlist("models")}
    typed = {"name": name, "expiry_days": days, "models": chosen, "scope": scope}
    usable = {row.id for row in await available_models(gateway(request), viewer.caller())}
    error = (
        "keys.name_too_long"
        if len(name) > 128
        else "keys.bad_expiry"
        if days not in EXPIRIES
        else "keys.bad_scope"
        if scope not in accounts.SCOPES
        else "keys.bad_models"
        if not chosen <= usable
        else None
    )
    if error:
        return await render_keys(request, portal, viewer, error=error, status=400, typed=typed)

    def work(session: Session) -> None:
        owner = accounts.get_user_by_id(session, viewer.user_id)
        key, secret = accounts.create_api_key(
            session,
            user=owner,
            name=name,
            expires_in=timedelta(days=days) if days else None,
            allowed_models=sorted(chosen) if chosen else None,
            scope=scope,
        )
        notice = Flash("keys.created_title", {"name": key.name}, secret=secret)
        leave_flash(session, request, viewer, notice)

    await gateway(request).transact(work)
    return redirect("/settings/keys")


async def revoke_key(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    await portal.form(request, viewer)
    key_id: int = request.path_params["key_id"]

    def work(session: Session) -> str:
        key = session.get(ApiKey, key_id)
        if key is None or key.user_id != viewer.user_id:
            raise NotFound("no such API key")
        accounts.revoke_api_key(session, key_id=key_id)
        return key.name

    gw = gateway(request)
    name = await gw.transact(work)
    await gw.callers_changed()
    return await done(request, viewer, "/settings/keys", "keys.revoked_notice", name=name)
