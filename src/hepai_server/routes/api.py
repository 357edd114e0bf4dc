"""The API's URL table: every endpoint under each prefix it is served at."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hepai_server import __version__
from hepai_server.gateway.frame import Frame
from hepai_server.gateway.gate import GateCall
from hepai_server.gateway.mcp import McpEndpoint
from hepai_server.gateway.media import MediaRelay
from hepai_server.gateway.relay import OpenAIRelay
from hepai_server.gateway.responses import ResponsesRelay
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
from hepai_server.routes import accounts, billing, ddf, files, mcp, openai, responses
from hepai_server.routes.http import json_response

#: Every API route is served under each prefix: the platform's own, and the two that
#: third-party tools append to a base URL.
PREFIXES = ("/apiv2", "/v1", "/apiv2/v1")


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
    routes += account_routes("/apiv2")
    routes += [Route(prefix, probe, methods=["GET"]) for prefix in PREFIXES]
    routes.append(Route("/healthz", probe, methods=["GET"]))
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
