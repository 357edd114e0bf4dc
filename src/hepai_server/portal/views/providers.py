"""Admin → providers and model permissions.

Providers from the config file are shown read-only; admins add others here, test their
connection (the last result is kept, in the audit log, and shown), fetch their model list,
disable, re-key or remove them. A provider's key is asked for once and never shown again: it
is stored sealed and the pages only say whether one is set. Model permissions say which groups
and users may use each provider model and each worker (tool) model, replacing the config
file's, or the workers' own, for that model.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.governance import ProviderHealth
from hepai_server.db.tables import AuditEvent, ModelName, WorkerModel
from hepai_server.errors import Conflict, InvalidRequest
from hepai_server.portal.notices import describe
from hepai_server.portal.views.admin import parse_groups
from hepai_server.portal.web import Portal, Viewer, done, gateway, record_action
from hepai_server.services import providers, upstream_models
from hepai_server.services.accounts import NAME

ADD_FIELDS = ("name", "preset", "base_url", "api_key", "models", "groups")


async def providers_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    return await render_providers(request, portal, viewer)


def last_tests(session: Session) -> dict[str, AuditEvent]:
    """Each provider's latest connection test."""
    events = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.action == "provider.test")
        .order_by(AuditEvent.id.desc())
        .limit(500)
    )
    latest: dict[str, AuditEvent] = {}
    for event in events:
        latest.setdefault(event.target, event)
    return latest


async def render_providers(
    request: Request,
    portal: Portal,
    viewer: Viewer,
    *,
    error: str | None = None,
    detail: str | None = None,
    status: int = 200,
    typed: dict[str, str] | None = None,
    fetched: upstream_models.Listing | None = None,
) -> Response:
    """The page; after a refused or fetched add form, with what was typed."""
    gw = gateway(request)

    def work(session: Session) -> dict[str, Any]:
        return {
            "stored": list(providers.list_providers(session)),
            "tests": last_tests(session),
            "checks": {row.provider: row for row in session.scalars(select(ProviderHealth))},
        }

    context = await gw.transact(work)
    return portal.render(
        request,
        "admin_providers.html",
        viewer=viewer,
        config_providers=gw.config_providers,
        presets=providers.presets(),
        error=error,
        detail=detail,
        status=status,
        typed=typed or {"groups": "all"},
        fetched=fetched,
        **context,
    )


def typed_fields(form: FormData) -> dict[str, str]:
    return {name: str(form.get(name) or "") for name in ADD_FIELDS}


async def add_provider(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    gw = gateway(request)
    typed = typed_fields(form)
    if form.get("action") == "fetch":
        return await fetch_for_form(request, portal, viewer, typed)
    name = typed["name"].strip()
    groups = parse_groups(typed["groups"] or "all")
    if not all(NAME.match(group) for group in groups):
        return await render_providers(
            request, portal, viewer, error="providers.bad_groups", status=400, typed=typed
        )

    def work(session: Session) -> None:
        models = providers.parse_models(typed["models"])
        provider = providers.add_provider(
            session,
            name=name,
            preset=typed["preset"] or None,
            base_url=typed["base_url"].strip() or None,
            api_key=typed["api_key"].strip() or None,
            models=models,
            sealer=gw.sealer,
            taken_names={p.name for p in gw.config_providers},
        )
        # A model that exists already keeps who may use it; only new ones get the form's.
        known = gw.catalog.ids() | providers.permissions(session).keys()
        for model in models:
            if model.id not in known:
                providers.set_permission(session, model_id=model.id, groups=groups, users=())
        detail = {
            "base_url": provider.base_url,
            "models": [m.id for m in models],
            "groups": groups,
            "key_set": provider.api_key_sealed is not None,
        }
        record_action(session, viewer, request, "provider.add", provider.name, detail)

    try:
        await gw.transact(work)
    except (InvalidRequest, Conflict) as error:
        typed["api_key"] = ""  # a refused form never sends the key back to the page
        return await render_providers(
            request,
            portal,
            viewer,
            error=describe(error),
            detail=error.message,
            status=400,
            typed=typed,
        )
    await changed(request)
    return await done(request, viewer, "/admin/providers", "providers.added", name=name)


async def fetch_for_form(
    request: Request, portal: Portal, viewer: Viewer, typed: dict[str, str]
) -> Response:
    """ "Fetch models" on the add form: the provider's list goes into the models field."""
    base_url = typed["base_url"].strip()
    if not base_url and typed["preset"]:
        base_url = providers.preset_url(typed["preset"]) or ""
    if not base_url.startswith(("http://", "https://")):
        return await render_providers(
            request, portal, viewer, error="errors.base_url", status=400, typed=typed
        )
    listing = await upstream_models.list_models(
        gateway(request).session, base_url, typed["api_key"].strip() or None
    )
    if listing.ok:
        typed["models"] = "\n".join(listing.models)
    typed["api_key"] = ""  # asked for again on saving: it is never written into a page
    return await render_providers(request, portal, viewer, typed=typed, fetched=listing)


async def change_provider(request: Request, portal: Portal) -> Response:
    """enable, disable, rekey, delete, test or fetch (add missing models) one stored provider."""
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    gw = gateway(request)
    provider_id = int(request.path_params["provider_id"])
    action = str(form.get("action") or "")
    if action in ("test", "fetch"):
        return await probe_provider(request, viewer, provider_id, action)

    def work(session: Session) -> str:
        provider = providers.get_provider(session, provider_id)
        if action in ("enable", "disable"):
            providers.set_enabled(session, provider=provider, enabled=action == "enable")
        elif action == "rekey":
            key = str(form.get("api_key") or "").strip()
            providers.replace_key(session, provider=provider, api_key=key, sealer=gw.sealer)
        elif action == "delete":
            providers.delete_provider(session, provider=provider)
        else:
            raise InvalidRequest(f"unknown action {action!r}", param="action")
        record_action(session, viewer, request, f"provider.{action}", provider.name)
        return provider.name

    name = await gw.transact(work)
    await changed(request)
    return await done(request, viewer, "/admin/providers", f"providers.{action}_done", name=name)


async def probe_provider(
    request: Request, viewer: Viewer, provider_id: int, action: str
) -> Response:
    """Ask the provider's model list; keep the result (a test) or add the models it lists
    that the provider lacks (a fetch). Only the status and a generic result reach the page."""
    gw = gateway(request)
    provider = await gw.transact(lambda s: providers.get_provider(s, provider_id))
    key = gw.sealer.unseal(provider.api_key_sealed) if provider.api_key_sealed else None
    listing = await upstream_models.list_models(gw.session, provider.base_url, key)

    def work(session: Session) -> int:
        stored = providers.get_provider(session, provider_id)
        added = 0
        if action == "fetch" and listing.ok:
            added = providers.add_models(session, provider=stored, model_ids=listing.models)
        detail = {"result": listing.result, "status": listing.status, "models": len(listing.models)}
        if action == "fetch":
            detail["added"] = added
        record_action(session, viewer, request, f"provider.{action}", stored.name, detail)
        return added

    added = await gw.transact(work)
    if added:
        await changed(request)
    message = (
        f"providers.probe_{listing.result}"
        if action == "test" or not listing.ok
        else ("providers.fetched")
    )
    return await done(
        request,
        viewer,
        "/admin/providers",
        message,
        ok=listing.ok,
        name=provider.name,
        status=listing.status or "",
        n=len(listing.models),
        added=added,
    )


async def changed(request: Request) -> None:
    """This process serves the change now; the others within half a second."""
    gw = gateway(request)
    await gw.catalog_changed()
    await gw.reload_catalog()


async def permissions_page(request: Request, portal: Portal) -> Response:
    """Provider models and worker models, each with who may use it."""
    viewer = await portal.viewer(request, admin=True)
    gw = gateway(request)

    def work(session: Session) -> dict[str, Any]:
        declared: dict[str, tuple[set[str], set[str]]] = {}
        for model in session.scalars(select(WorkerModel)):
            groups, users = declared.setdefault(model.model_name, (set(), set()))
            groups.update(model.groups)
            users.update(model.users)
        return {"overridden": providers.permissions(session), "declared": declared}

    context = await gw.transact(work)
    overridden = context["overridden"]
    workers = [
        {
            "id": name,
            "groups": overridden[name][0] if name in overridden else groups,
            "users": overridden[name][1] if name in overridden else users,
        }
        for name, (groups, users) in sorted(context["declared"].items())
    ]
    return portal.render(
        request,
        "admin_models.html",
        viewer=viewer,
        models=sorted(gw.catalog.models(), key=lambda model: model.id),
        worker_models=workers,
        overridden=overridden,
    )


async def set_permission(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    gw = gateway(request)
    model_id = str(form.get("model") or "")
    is_worker_model = await gw.transact(lambda s: s.get(ModelName, model_id) is not None)
    if model_id not in gw.catalog.ids() and not is_worker_model:
        raise InvalidRequest(f"no model {model_id!r}", param="model")
    groups, users = parse_groups(form.get("groups")), parse_groups(form.get("users"))
    if not all(NAME.match(name) for name in [*groups, *users]):
        raise InvalidRequest(
            "groups and users are names of letters, digits and _.@+-", param="groups"
        )
    reset = form.get("action") == "reset"

    def work(session: Session) -> None:
        if reset:
            providers.clear_permission(session, model_id=model_id)
        else:
            providers.set_permission(session, model_id=model_id, groups=groups, users=users)
        detail = {} if reset else {"groups": groups, "users": users}
        action = "model.reset_permission" if reset else "model.permission"
        record_action(session, viewer, request, action, model_id, detail)

    await gw.transact(work)
    await changed(request)
    await gw.callers_changed()
    message = "permissions.reset_done" if reset else "permissions.saved"
    return await done(request, viewer, "/admin/models", message, name=model_id)
