"""The API's URL table: every endpoint under each prefix it is served at."""

from __future__ import annotations

import asyncio
import hmac

import orjson
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hepai_server import __version__
from hepai_server.errors import AuthenticationFailed, PermissionDenied
from hepai_server.gateway.auth import token_from_headers
from hepai_server.gateway.frame import Frame
from hepai_server.gateway.gate import GateCall
from hepai_server.gateway.mcp import McpEndpoint
from hepai_server.gateway.media import MediaRelay
from hepai_server.gateway.relay import OpenAIRelay
from hepai_server.gateway.responses import ResponsesRelay
from hepai_server.gateway.runtime import Gateway
from hepai_server.protocol.openai import (
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    IMAGE_EDITS,
    IMAGE_GENERATIONS,
    RERANK,
    SPEECH,
    TRANSCRIPTIONS,
    TRANSLATIONS,
)
from hepai_server.routes import (
    accounts,
    batches,
    billing,
    ddf,
    files,
    groups,
    mcp,
    openai,
    providers,
    responses,
    vector_stores,
)
from hepai_server.routes.http import json_response
from hepai_server.telemetry.metrics import CONTENT_TYPE

#: Every API route is served under each prefix: the platform's own, and the two that
#: third-party tools append to a base URL.
PREFIXES = ("/apiv2", "/v1", "/apiv2/v1")
JSON = "application/json"


def api_routes() -> list[BaseRoute]:
    relays = [
        ("/chat/completions", Frame(OpenAIRelay(CHAT))),
        ("/completions", Frame(OpenAIRelay(COMPLETIONS))),
        ("/embeddings", Frame(OpenAIRelay(EMBEDDINGS))),
        ("/rerank", Frame(OpenAIRelay(RERANK))),
        ("/responses", Frame(ResponsesRelay())),
        ("/audio/transcriptions", Frame(MediaRelay(TRANSCRIPTIONS, multipart=True))),
        ("/audio/translations", Frame(MediaRelay(TRANSLATIONS, multipart=True))),
        ("/audio/speech", Frame(MediaRelay(SPEECH, multipart=False))),
        ("/images/generations", Frame(MediaRelay(IMAGE_GENERATIONS, multipart=False))),
        ("/images/edits", Frame(MediaRelay(IMAGE_EDITS, multipart=True))),
    ]
    routes: list[BaseRoute] = []
    for prefix in PREFIXES:
        routes += [Route(prefix + path, endpoint, methods=["POST"]) for path, endpoint in relays]
        routes += [
            Route(prefix + "/models", openai.list_models, methods=["GET"]),
            Route(prefix + "/models/{model_id:path}", openai.retrieve_model, methods=["GET"]),
        ]
    anthropic = Frame(OpenAIRelay(CHAT, anthropic=True))
    for path in ("/apiv2/anthropic/v1/messages", "/apiv2/anthropic/messages", "/apiv2/v1/messages"):
        routes.append(Route(path, anthropic, methods=["POST"]))
        routes.append(Route(path + "/count_tokens", openai.count_tokens, methods=["POST"]))
    for prefix in PREFIXES:
        routes += file_routes(prefix)
        routes += response_routes(prefix)
        routes += vector_store_routes(prefix)
        routes += batch_routes(prefix)
        routes += [
            Route(prefix + "/billing/limits", billing.billing_limits, methods=["GET"]),
            Route(
                prefix + "/dashboard/billing/subscription",
                billing.dashboard_subscription,
                methods=["GET"],
            ),
            Route(prefix + "/dashboard/billing/usage", billing.dashboard_usage, methods=["GET"]),
        ]
    routes += mcp_routes("/apiv2")
    routes += ddf_routes("/apiv2")
    routes.append(Route("/apiv2/providers/health", providers.provider_health, methods=["GET"]))
    routes += group_routes("/apiv2")
    routes += account_routes("/apiv2")
    routes += [Route(prefix, probe, methods=["GET"]) for prefix in PREFIXES]
    routes.append(Route("/healthz", probe, methods=["GET"]))
    routes.append(Route("/health/live", probe, methods=["GET"]))
    routes.append(Route("/health/ready", ready, methods=["GET"]))
    routes.append(Route("/metrics", metrics, methods=["GET"]))
    return routes


def file_routes(prefix: str) -> list[BaseRoute]:
    file, upload = prefix + "/files/{file_id}", prefix + "/uploads/{upload_id}"
    return [
        Route(prefix + "/files", files.create_file, methods=["POST"]),
        Route(prefix + "/files", files.list_files, methods=["GET"]),
        Route(file, files.retrieve_file, methods=["GET"]),
        Route(file, files.delete_file, methods=["DELETE"]),
        Route(file + "/content", files.file_content, methods=["GET"]),
        Route(file + "/preview", files.file_preview, methods=["GET"]),
        Route(prefix + "/uploads", files.create_upload, methods=["POST"]),
        Route(upload + "/parts", files.add_upload_part, methods=["POST"]),
        Route(upload + "/complete", files.complete_upload, methods=["POST"]),
        Route(upload + "/cancel", files.cancel_upload, methods=["POST"]),
    ]


def batch_routes(prefix: str) -> list[BaseRoute]:
    """The Batch API (its work runs on the job runner, gateway/batches.py)."""
    batch = prefix + "/batches/{batch_id}"
    return [
        Route(prefix + "/batches", batches.create_batch, methods=["POST"]),
        Route(prefix + "/batches", batches.list_batches, methods=["GET"]),
        Route(batch, batches.retrieve_batch, methods=["GET"]),
        Route(batch + "/cancel", batches.cancel_batch, methods=["POST"]),
    ]


def vector_store_routes(prefix: str) -> list[BaseRoute]:
    stores, v = prefix + "/vector_stores", vector_stores
    store = stores + "/{store_id}"
    file, batch = store + "/files/{file_id}", store + "/file_batches/{batch_id}"
    return [
        Route(stores, v.create_store, methods=["POST"]),
        Route(stores, v.list_stores, methods=["GET"]),
        Route(store, v.retrieve_store, methods=["GET"]),
        Route(store, v.modify_store, methods=["POST"]),
        Route(store, v.delete_store, methods=["DELETE"]),
        Route(store + "/search", v.search_store, methods=["POST"]),
        Route(store + "/share", v.share_store, methods=["POST"]),
        Route(store + "/files", v.attach_file, methods=["POST"]),
        Route(store + "/files", v.list_files, methods=["GET"]),
        Route(file, v.retrieve_file, methods=["GET"]),
        Route(file, v.update_file, methods=["POST"]),
        Route(file, v.delete_file, methods=["DELETE"]),
        Route(file + "/content", v.file_content, methods=["GET"]),
        Route(store + "/file_batches", v.create_batch, methods=["POST"]),
        Route(batch, v.retrieve_batch, methods=["GET"]),
        Route(batch + "/cancel", v.cancel_batch, methods=["POST"]),
        Route(batch + "/files", v.list_files, methods=["GET"]),
    ]


def response_routes(prefix: str) -> list[BaseRoute]:
    """The Responses API besides its POST (a relay, above)."""
    response = prefix + "/responses/{response_id}"
    return [
        Route(response, responses.retrieve_response, methods=["GET"]),
        Route(response, responses.delete_response, methods=["DELETE"]),
        Route(response + "/input_items", responses.list_input_items, methods=["GET"]),
        Route(response + "/cancel", responses.cancel_response, methods=["POST"]),
    ]


def mcp_routes(prefix: str) -> list[BaseRoute]:
    """The MCP endpoint, and the admin API of the external servers it offers tools of."""
    servers = prefix + "/mcp/servers"
    return [
        Route(prefix + "/mcp", Frame(McpEndpoint()), methods=["POST", "GET", "DELETE"]),
        Route(servers, mcp.list_servers, methods=["GET"]),
        Route(servers, mcp.add_server, methods=["POST"]),
        Route(servers + "/{name}", mcp.remove_server, methods=["DELETE"]),
    ]


def ddf_routes(prefix: str) -> list[BaseRoute]:
    gate = Frame(GateCall())
    return [
        Route(prefix + "/worker/unified_gate", gate, methods=["POST"]),
        Route(prefix + "/worker_unified_gate", gate, methods=["POST"]),
        Route(prefix + "/worker/register_worker", ddf.register_worker, methods=["POST"]),
        Route(prefix + "/worker/stop_worker", ddf.stop_worker, methods=["POST"]),
        Route(prefix + "/worker/list_workers", ddf.list_workers, methods=["GET"]),
        Route(prefix + "/worker/get_worker_info", ddf.get_worker_info, methods=["POST"]),
        Route(prefix + "/worker/get_worker_status", ddf.get_worker_status, methods=["POST"]),
        Route(prefix + "/worker/refresh_all_workers", ddf.refresh_all_workers, methods=["GET"]),
        Route(prefix + "/agents/list_agents", ddf.list_agents, methods=["GET"]),
    ]


def group_routes(prefix: str) -> list[BaseRoute]:
    member = prefix + "/groups/{group}/members/{username}"
    return [
        Route(prefix + "/groups", groups.list_groups, methods=["GET"]),
        Route(prefix + "/groups/{group}/usage", groups.group_usage, methods=["GET"]),
        Route(member, groups.change_member, methods=["POST", "DELETE"]),
        Route(prefix + "/groups/{group}/join", groups.join_group, methods=["POST"]),
        Route(member + "/budget", groups.member_budget, methods=["PUT"]),
        Route(member + "/limits", groups.member_limits, methods=["PUT"]),
    ]


def account_routes(prefix: str) -> list[BaseRoute]:
    return [
        Route(prefix + "/key/create_api_key", accounts.create_api_key, methods=["POST"]),
        Route(prefix + "/key/list_api_keys", accounts.list_api_keys, methods=["GET"]),
        Route(prefix + "/key/delete_api_key", accounts.delete_api_key, methods=["POST"]),
        Route(prefix + "/key/verify_api_key", accounts.verify_api_key, methods=["POST"]),
        Route(prefix + "/verify_api_key", accounts.verify_api_key, methods=["POST"]),
        Route(prefix + "/key/fetch_api_key", accounts.fetch_api_key, methods=["POST"]),
        Route(prefix + "/user/list_users", accounts.list_users, methods=["GET"]),
        Route(prefix + "/user/create_user", accounts.create_user, methods=["POST"]),
        Route(prefix + "/user/delete_user", accounts.delete_user, methods=["POST"]),
        Route(prefix + "/user/auth_user", accounts.auth_user, methods=["POST"]),
    ]


async def probe(_request: Request) -> Response:
    return json_response({"status": "ok", "version": __version__})


async def ready(request: Request) -> Response:
    """200 while this process should get traffic; 503, with each check's verdict, when not."""
    gateway: Gateway = request.state.gateway
    ok, checks = await gateway.health.ready()
    body = {"status": "ready" if ok else "unready", "checks": checks}
    return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type=JSON)


async def metrics(request: Request) -> Response:
    """Every Prometheus series of this server's processes, for a scraper allowed to see them."""
    gateway: Gateway = request.state.gateway
    check_scraper(request, gateway.settings.metrics_token)
    text = await asyncio.to_thread(gateway.metrics.exposition)
    return Response(text, media_type=CONTENT_TYPE)


#: Headers a reverse proxy adds: a request carrying one came from elsewhere, through it.
FORWARDED = ("x-forwarded-for", "x-real-ip", "forwarded")


def check_scraper(request: Request, token: SecretStr | None) -> None:
    """With a token, the scraper must send it as a bearer token; without one, it must be on
    this machine and not forwarded by a proxy on it."""
    if token is not None:
        sent = token_from_headers(dict(request.scope["headers"])) or ""
        if not hmac.compare_digest(sent.encode(), token.get_secret_value().encode()):
            raise AuthenticationFailed("/metrics needs the metrics token as a bearer token")
        return
    host = request.client.host if request.client else ""
    local = host == "::1" or host.startswith("127.")
    if not local or any(name in request.headers for name in FORWARDED):
        raise PermissionDenied(
            "/metrics answers loopback only; set HEPAI_SERVER_METRICS_TOKEN to scrape it "
            "from elsewhere"
        )
