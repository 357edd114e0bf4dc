"""create_app(settings): the ASGI application, its routes, error handlers and lifespan."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hepai_server import __version__
from hepai_server.config import Settings, load_providers
from hepai_server.errors import HepAIError, MethodNotAllowed, NotFound, PayloadTooLarge
from hepai_server.gateway.asgi import Receive, Scope, Send
from hepai_server.gateway.gate import UnifiedGate
from hepai_server.gateway.routes import accounts, ddf, files, openai
from hepai_server.gateway.routes.http import json_response
from hepai_server.gateway.runtime import Gateway
from hepai_server.portal.routes import portal_routes
from hepai_server.portal.web import Portal
from hepai_server.protocol.openai import CHAT, COMPLETIONS, EMBEDDINGS, RERANK

log = logging.getLogger(__name__)

#: Every API route is served under each prefix: the platform's own, and the two that
#: third-party tools append to a base URL.
PREFIXES = ("/apiv2", "/v1", "/apiv2/v1")


def create_app(settings: Settings) -> Starlette:
    """The application, serving the providers of the file the settings name and the ones
    admins add in the portal."""
    config_providers = load_providers(settings.config)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, Any]]:
        gateway = await Gateway.start(settings, config_providers)
        settle_garbage_collector()
        try:
            yield {"gateway": gateway, "portal": Portal(settings)}
        finally:
            await gateway.close()

    return Starlette(
        routes=api_routes() + portal_routes(),
        middleware=[Middleware(TrailingSlash)],
        lifespan=lifespan,
        exception_handlers={
            HepAIError: on_hepai_error,
            HTTPException: on_http_exception,
            Exception: on_unexpected_error,
        },
    )


def settle_garbage_collector() -> None:
    """Move everything built at startup out of the collector's sight and collect less often.

    Measured (benchmarks/RESULTS.md): without this, full collections walked ~100k startup
    objects every few hundred requests, 12% of the gateway's CPU and 50 ms pauses.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def create_app_from_env() -> Starlette:
    """The factory `hepai-server serve` hands to uvicorn, so each worker process builds its own."""
    settings = Settings()
    settings.configure_logging()
    return create_app(settings)


def api_routes() -> list[BaseRoute]:
    relays = [
        ("/chat/completions", openai.RelayEndpoint(CHAT)),
        ("/completions", openai.RelayEndpoint(COMPLETIONS)),
        ("/embeddings", openai.RelayEndpoint(EMBEDDINGS)),
        ("/rerank", openai.RelayEndpoint(RERANK)),
    ]
    routes: list[BaseRoute] = []
    for prefix in PREFIXES:
        routes += [Route(prefix + path, endpoint, methods=["POST"]) for path, endpoint in relays]
        routes += [
            Route(prefix + "/models", openai.list_models, methods=["GET"]),
            Route(prefix + "/models/{model_id:path}", openai.retrieve_model, methods=["GET"]),
        ]
    anthropic = openai.RelayEndpoint(CHAT, anthropic=True)
    for path in ("/apiv2/anthropic/v1/messages", "/apiv2/anthropic/messages", "/apiv2/v1/messages"):
        routes.append(Route(path, anthropic, methods=["POST"]))
        routes.append(Route(path + "/count_tokens", openai.count_tokens, methods=["POST"]))
    for prefix in PREFIXES:
        routes += file_routes(prefix)
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


def ddf_routes(prefix: str) -> list[BaseRoute]:
    gate = UnifiedGate()
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


class TrailingSlash:
    """Serves ``/path/`` as ``/path``: the hepai client and some tools add the slash."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if len(path) > 1 and path.endswith("/"):
            scope["path"] = path.rstrip("/") or "/"
        await self.app(scope, receive, send)


async def probe(_request: Request) -> Response:
    return json_response({"status": "ok", "version": __version__})


async def on_hepai_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HepAIError)
    # After a 413 the rest of the refused body may still be on its way: closing the
    # connection spares reading it.
    headers = {"connection": "close"} if isinstance(exc, PayloadTooLarge) else None
    return Response(
        exc.to_json(), status_code=exc.status, headers=headers, media_type="application/json"
    )


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: HepAIError
    if exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    else:
        error = NotFound(f"no route {request.url.path}")
    return Response(
        error.to_json(),
        status_code=error.status,
        headers=exc.headers,
        media_type="application/json",
    )


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    error = HepAIError("The server had an error while processing your request.")
    return Response(error.to_json(), status_code=500, media_type="application/json")
