"""Settings → API keys: create one (its secret shown once), list them, revoke one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.tables import ApiKey
from hepai_server.errors import NotFound
from hepai_server.portal.views.models import available_models
from hepai_server.portal.web import Portal, Viewer, gateway, redirect
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
    created: tuple[ApiKey, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
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
        default_expiry=DEFAULT_EXPIRY,
        created=created,
        error=error,
        status=status,
    )


async def create_key(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    form = await portal.form(request, viewer)
    name = str(form.get("name") or "").strip() or "default"
    if len(name) > 128:
        return await render_keys(request, portal, viewer, error="keys.name_too_long", status=400)
    try:
        days = int(str(form.get("expiry_days") or DEFAULT_EXPIRY))
    except ValueError:
        days = -1
    if days not in EXPIRIES:
        return await render_keys(request, portal, viewer, error="keys.bad_expiry", status=400)
    scope = str(form.get("scope") or accounts.INFERENCE)
    if scope not in accounts.SCOPES:
        return await render_keys(request, portal, viewer, error="keys.bad_scope", status=400)
    chosen = {str(value) for value in form.getlist("models")}
    usable = {row.id for row in await available_models(gateway(request), viewer.caller())}
    if not chosen <= usable:
        return await render_keys(request, portal, viewer, error="keys.bad_models", status=400)

    def work(session: Session) -> tuple[ApiKey, str]:
        owner = accounts.get_user_by_id(session, viewer.user_id)
        return accounts.create_api_key(
            session,
            user=owner,
            name=name,
            expires_in=timedelta(days=days) if days else None,
            allowed_models=sorted(chosen) if chosen else None,
            scope=scope,
        )

    created = await gateway(request).transact(work)
    return await render_keys(request, portal, viewer, created=created, status=201)


async def revoke_key(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    await portal.form(request, viewer)
    key_id: int = request.path_params["key_id"]

    def work(session: Session) -> Any:
        key = session.get(ApiKey, key_id)
        if key is None or key.user_id != viewer.user_id:
            raise NotFound("no such API key")
        return accounts.revoke_api_key(session, key_id=key_id)

    gw = gateway(request)
    await gw.transact(work)
    await gw.callers_changed()
    return redirect("/settings/keys")
