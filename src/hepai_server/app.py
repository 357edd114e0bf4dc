"""create_app(settings): the application. The composition root: the one module that knows the
API, the portal and the services they share, and builds them all."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hepai_server.config import Settings, load_providers
from hepai_server.db.engine import is_unavailable, unavailable
from hepai_server.errors import (
    DatabaseUnavailable,
    HepAIError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from hepai_server.gateway.asgi import REQUEST_ID_KEY, client_request_id
from hepai_server.gateway.edge import Edge
from hepai_server.gateway.frame import Frame
from hepai_server.gateway.health import drain_on_sigterm
from hepai_server.gateway.runtime import Gateway
from hepai_server.portal.routes import portal_routes
from hepai_server.portal.web import Portal, error_page, wants_page
from hepai_server.routes.api import api_routes
from hepai_server.routes.table import fixed_first

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Starlette:
    """The application, serving the providers of the file the settings name and the ones
    admins add in the portal."""
    config_providers = load_providers(settings.config)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, Any]]:
        gateway = await Gateway.start(settings, config_providers)
        drain_on_sigterm(gateway.health, settings.drain_seconds)
        settle_garbage_collector()
        try:
            yield {"gateway": gateway, "portal": Portal(settings)}
        finally:
            await gateway.close()

    routes = api_routes() + portal_routes()
    return Starlette(
        routes=fixed_first(routes),
        middleware=[Middleware(Edge, stamped=frame_paths(routes))],
        lifespan=lifespan,
        exception_handlers={
            HepAIError: on_hepai_error,
            SQLAlchemyError: on_database_error,
            HTTPException: on_http_exception,
            Exception: on_unexpected_error,
        },
    )


def frame_paths(routes: list[BaseRoute]) -> frozenset[str]:
    """The paths of the relaying endpoints, which send their own x-request-id."""
    return frozenset(
        route.path
        for route in routes
        if isinstance(route, Route) and isinstance(route.endpoint, Frame)
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


async def on_hepai_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HepAIError)
    if isinstance(exc, DatabaseUnavailable):
        log.warning("503 on %s %s: %s", request.method, request.url.path, exc.message)
        if hasattr(request.state, "gateway"):
            request.state.gateway.metrics.db_unavailable.inc()
    headers = stamp(request)
    headers.update(exc.headers or {})
    if isinstance(exc, PayloadTooLarge):
        # After a 413 the rest of the refused body may still be on its way: closing the
        # connection spares reading it.
        headers["connection"] = "close"
    if exc.retry_after is not None:
        headers["retry-after"] = str(exc.retry_after)
    return Response(
        exc.to_json(), status_code=exc.status, headers=headers, media_type="application/json"
    )


async def on_database_error(request: Request, exc: Exception) -> Response:
    """A database that does not answer is a 503 with Retry-After; any other database error
    is a bug."""
    if not is_unavailable(exc):
        return await on_unexpected_error(request, exc)
    return await on_hepai_error(request, unavailable(exc))


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: HepAIError
    if exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    else:
        error = NotFound(f"no route {request.url.path}")
    if wants_page(request):  # a browser gets the portal's page; programs keep the JSON
        return await error_page(request, error)
    return Response(
        error.to_json(),
        status_code=error.status,
        headers={**stamp(request), **(exc.headers or {})},
        media_type="application/json",
    )


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    error = HepAIError("The server had an error while processing your request.")
    if wants_page(request):
        return await error_page(request, error, signed_in=False)
    return Response(
        error.to_json(), status_code=500, headers=stamp(request), media_type="application/json"
    )


def stamp(request: Request) -> dict[str, str]:
    """The request id headers for an error answer (the platform's, and the client's own): the
    edge does not stamp those on the relaying endpoints' paths, nor the 500s sent from outside
    it."""
    headers = {}
    if request_id := request.scope.get(REQUEST_ID_KEY):
        headers["x-request-id"] = request_id
    if client_id := client_request_id(request.headers.get("x-request-id", "").encode() or None):
        headers["x-client-request-id"] = client_id
    return headers
