"""Admin → providers and model permissions.

Providers from the config file are shown read-only; admins add others here, test their
connection, disable, re-key or remove them. A provider's key is asked for once and never shown
again: it is stored sealed and the pages only say whether one is set. Model permissions say which
groups and users may use each provider model, replacing the config file's for that model.
"""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.errors import Conflict, InvalidRequest
from hepai_server.portal.views.admin import parse_groups
from hepai_server.portal.web import Portal, Viewer, gateway, record_action, redirect
from hepai_server.services import providers
from hepai_server.services.accounts import NAME


async def providers_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    return await render_providers(request, portal, viewer)


async def render_providers(
    request: Request,
    portal: Portal,
    viewer: Viewer,
    *,
    error: str | None = None,
    probe: tuple[str, bool, str] | None = None,
    status: int = 200,
) -> Response:
    gw = gateway(request)
    stored = await gw.transact(lambda s: list(providers.list_providers(s)))
    return portal.render(
        request,
        "admin_providers.html",
        viewer=viewer,
        config_providers=gw.config_providers,
        stored=stored,
        presets=providers.presets(),
        error=error,
        probe=probe,
        status=status,
    )


async def add_provider(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    gw = gateway(request)
    name = str(form.get("name") or "").strip()
    groups = parse_groups(form.get("groups") or "all")
    if not all(NAME.match(group) for group in groups):
        return await render_providers(
            request, portal, viewer, error="providers.bad_groups", status=400
        )

    def work(session: Session) -> None:
        models = providers.parse_models(str(form.get("models") or ""))
        provider = providers.add_provider(
            session,
            name=name,
            preset=str(form.get("preset") or "") or None,
            base_url=str(form.get("base_url") or "").strip() or None,
            api_key=str(form.get("api_key") or "").strip() or None,
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
        return await render_providers(request, portal, viewer, error=error.message, status=400)
    await changed(request)
    return redirect("/admin/providers")


async def change_provider(request: Request, portal: Portal) -> Response:
    """enable, disable, rekey, delete or test one stored provider."""
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    gw = gateway(request)
    provider_id = int(request.path_params["provider_id"])
    action = str(form.get("action") or "")
    if action == "test":
        provider = await gw.transact(lambda s: providers.get_provider(s, provider_id))
        key = gw.sealer.unseal(provider.api_key_sealed) if provider.api_key_sealed else None
        ok, said = await providers.probe(gw.session, provider.base_url, key)
        return await render_providers(request, portal, viewer, probe=(provider.name, ok, said))

    def work(session: Session) -> None:
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

    await gw.transact(work)
    await changed(request)
    return redirect("/admin/providers")


async def changed(request: Request) -> None:
    """This process serves the change now; the others within half a second."""
    gw = gateway(request)
    await gw.catalog_changed()
    await gw.reload_catalog()


async def permissions_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    gw = gateway(request)
    overridden = await gw.transact(providers.permissions)
    return portal.render(
        request,
        "admin_models.html",
        viewer=viewer,
        models=sorted(gw.catalog.models(), key=lambda model: model.id),
        overridden=overridden,
    )


async def set_permission(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    gw = gateway(request)
    model_id = str(form.get("model") or "")
    if model_id not in gw.catalog.ids():
        raise InvalidRequest(f"no provider model {model_id!r}", param="model")
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
    return redirect("/admin/models")
