"""The portal's URL table."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from hepai_server.portal.views import (
    admin,
    auth,
    budgets,
    files,
    groups,
    home,
    keys,
    knowledge,
    limits,
    models,
    my_groups,
    playground,
    prices,
    providers,
    usage,
    workers,
)
from hepai_server.portal.web import Handler, page
from hepai_server.protocol.openai import CHAT, EMBEDDINGS, RERANK


def get(path: str, handler: Handler) -> Route:
    return Route(path, page(handler), methods=["GET"])


def post(path: str, handler: Handler) -> Route:
    return Route(path, page(handler), methods=["POST"])


def portal_routes() -> list[BaseRoute]:
    return [
        get("/", home.home),
        get("/login", auth.login_form),
        post("/login", auth.login),
        post("/logout", auth.logout),
        get("/login/sso", auth.sso_begin),
        get("/login/sso/callback", auth.sso_callback),
        get("/lang/{language}", auth.switch_language),
        get("/models", models.models_page),
        get("/models/{model_id:path}", models.model_page),
        get("/settings/keys", keys.keys_page),
        post("/settings/keys", keys.create_key),
        post("/settings/keys/{key_id:int}/revoke", keys.revoke_key),
        get("/settings/limits", limits.limits_page),
        post("/notices/seen", home.dismiss_notice),
        post("/notices/{notice_id:int}/seen", home.dismiss_notice),
        get("/settings/password", auth.password_form),
        post("/settings/password", auth.change_password),
        get("/usage", usage.usage_page),
        get("/usage.csv", usage.usage_csv),
        get("/files", files.files_page),
        post("/files", files.upload_file),
        get("/files/{file_id}/download", files.download_file),
        post("/files/{file_id}/delete", files.delete_file),
        get("/knowledge", knowledge.knowledge_page),
        post("/knowledge", knowledge.create_store),
        get("/knowledge/{store_id}", knowledge.store_page),
        get("/knowledge/{store_id}/status", knowledge.store_status),
        post("/knowledge/{store_id}/delete", knowledge.delete_store),
        post("/knowledge/{store_id}/files", knowledge.add_files),
        post("/knowledge/{store_id}/upload", knowledge.upload_file),
        post("/knowledge/{store_id}/share", knowledge.share_store),
        post("/knowledge/{store_id}/files/{file_id}/remove", knowledge.remove_file),
        get("/playground", playground.playground_page),
        *playground_calls("/playground/v1"),
        get("/groups", my_groups.my_groups_page),
        get("/groups/{name}", my_groups.my_group_page),
        post("/groups/{name}", my_groups.change_members),
        post("/groups/{name}/join", my_groups.join_group),
        get("/groups/{name}/members/{username}", my_groups.member_page),
        post("/groups/{name}/members/{username}", my_groups.change_member),
        get("/admin", admin.admin_home),
        get("/admin/users", admin.users_page),
        post("/admin/users", admin.create_user),
        get("/admin/users/{user_id:int}", admin.user_page),
        post("/admin/users/{user_id:int}", admin.update_user),
        get("/admin/groups", groups.groups_page),
        post("/admin/groups", groups.create_group),
        get("/admin/groups/{name}", groups.group_page),
        post("/admin/groups/{name}", groups.change_group),
        get("/admin/providers", providers.providers_page),
        post("/admin/providers", providers.add_provider),
        post("/admin/providers/{provider_id:int}", providers.change_provider),
        get("/admin/models", providers.permissions_page),
        post("/admin/models", providers.set_permission),
        get("/admin/prices", prices.prices_page),
        get("/admin/prices/{model_id:path}", prices.price_page),
        post("/admin/prices/{model_id:path}", prices.change_price),
        get("/admin/budgets", budgets.budgets_page),
        post("/admin/budgets", budgets.change_budget),
        post("/admin/limits", budgets.change_limit),
        get("/admin/workers", workers.workers_page),
        post("/admin/workers", workers.change_worker),
        get("/admin/knowledge", knowledge.admin_page),
        get("/admin/audit", admin.audit_page),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Mount("/static", StaticFiles(packages=[("hepai_server.portal", "static")]), name="static"),
    ]


async def favicon(_request: Request) -> Response:
    """Browsers ask for /favicon.ico before reading the page's icon link."""
    return RedirectResponse("/static/favicon.svg", status_code=301)


def playground_calls(prefix: str) -> list[BaseRoute]:
    """The API calls the playground page makes, authenticated by its session."""
    relays = [("/chat/completions", CHAT), ("/embeddings", EMBEDDINGS), ("/rerank", RERANK)]
    routes: list[BaseRoute] = [
        Route(prefix + path, playground.playground_relay(endpoint), methods=["POST"])
        for path, endpoint in relays
    ]
    routes.append(
        Route(prefix + "/worker/unified_gate", playground.playground_gate(), methods=["POST"])
    )
    return routes
