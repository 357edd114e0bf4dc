"""serve(): run one Worker as a DDF worker process.

It speaks the wire the hepai SDK's workers speak (wire spec §2): the unified gate for calls,
``get_worker_info`` and ``get_status`` for the controller; it registers with the controller
using its owner's key, repeats the registration as its heartbeat, and deregisters on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from hepai_server.worker.model import (
    CallContext,
    TooLarge,
    UpstreamFailed,
    Worker,
    parse_permission,
    set_current_call,
)

log = logging.getLogger(__name__)

#: How exceptions from a remote method map to statuses (as the hepai SDK's workers map them).
STATUS_OF: tuple[tuple[type[BaseException], int], ...] = (
    (TooLarge, 413),
    (NotImplementedError, 501),
    (ModuleNotFoundError, 404),
    (FileNotFoundError, 404),
    (PermissionError, 403),
    (TimeoutError, 504),
    (ConnectionError, 503),
    (UpstreamFailed, 502),
    (TypeError, 500),
)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    controller: str
    api_key: str
    host: str = "127.0.0.1"
    #: 0: a free port, picked when the worker starts listening.
    port: int = 0
    route_prefix: str = "/apiv2"
    worker_id: str | None = None
    heartbeat_seconds: float = 60.0
    priority: int = 0
    weight: float = 1.0


class WorkerService:
    """One Worker object behind HTTP, and its membership of the platform."""

    def __init__(self, worker: Worker, options: WorkerOptions) -> None:
        if not worker.name:
            raise ValueError(f"{type(worker).__name__} needs a name, e.g. name = 'alice/tool'")
        self.worker = worker
        self.options = options
        self.functions = worker.remote_functions()
        self.worker_id = (
            options.worker_id
            or "wk-"
            + uuid.uuid5(
                uuid.NAMESPACE_URL, f"{socket.gethostname()}:{options.port}:{worker.name}"
            ).hex[:12]
        )
        self.secret = "sk-" + secrets.token_urlsafe(32)
        self.started = time.time()
        self.limit = asyncio.Semaphore(worker.concurrency)
        self.active = 0

    # --- what the controller is told -------------------------------------------------
    def info(self) -> dict[str, Any]:
        options = self.options
        permissions = parse_permission(self.worker.permission)
        address = f"http://{options.host}:{options.port}{options.route_prefix}"
        return {
            "id": self.worker_id,
            "type": "common",
            "network_info": {
                "host": options.host,
                "port": options.port,
                "route_prefix": options.route_prefix,
                "host_name": socket.gethostname(),
                "worker_address": address,
            },
            "resource_info": [
                {
                    "model_name": self.worker.name,
                    "model_type": "common",
                    "model_version": "1.0",
                    "model_description": self.worker.description,
                    "model_author": "",
                    "model_owner": "",
                    "model_groups": permissions.get("groups", []),
                    "model_users": permissions.get("users", []),
                    "model_functions": list(self.functions),
                    "id": "md-" + self.worker_id[3:],
                    "created": int(self.started),
                    "object": "model",
                    "owned_by": "",
                }
            ],
            "status_info": self.status(),
            "check_heartbeat": True,
            "last_heartbeat": None,
            "version": "2.0",
            "metadata": {
                "description": self.worker.description,
                "limit_model_concurrency": self.worker.concurrency,
                "permissions": permissions,
                "uptime": time.time() - self.started,
                "priority": options.priority,
                "weight": options.weight,
            },
        }

    def status(self) -> dict[str, Any]:
        busy = self.active >= self.worker.concurrency
        return {
            "speed": 1,
            "queue_length": self.active,
            "status": "busy" if busy else "ready",
            "start_time": self.started,
        }

    # --- the unified gate ---------------------------------------------------------------
    async def gate(self, request: Request) -> Response:
        model = request.query_params.get("model")
        function_name = request.query_params.get("function", "__call__")
        if model and model != self.worker.name:
            raise HTTPException(503, f"model `{model}` is not served by worker {self.worker_id}")
        function = self.functions.get(function_name)
        if function is None:
            status = 405 if hasattr(self.worker, function_name) else 404
            raise HTTPException(status, f"function `{function_name}` is not remote callable")
        args, kwargs = await call_arguments(request)
        kwargs = fit_kwargs(function, kwargs)
        call = caller_of(request, self.platform_url)
        set_current_call(call)
        self.active += 1
        try:
            async with self.limit:
                result = await invoke(function, args, kwargs)
        except HTTPException:
            raise
        except Exception as exc:
            return error_response(exc)
        finally:
            self.active -= 1
        if inspect.isasyncgen(result) or inspect.isgenerator(result):
            return StreamingResponse(frames(result), media_type="application/octet-stream")
        headers = {"x-hepai-usage": orjson.dumps(call.usage).decode()} if call.usage else None
        return Response(orjson.dumps(result), headers=headers, media_type="application/json")

    @property
    def platform_url(self) -> str:
        return self.options.controller.rstrip("/") + "/apiv2"

    # --- membership ---------------------------------------------------------------------
    @asynccontextmanager
    async def membership(self, _app: Starlette) -> AsyncIterator[None]:
        base = self.platform_url
        headers = {"authorization": f"Bearer {self.options.api_key}"}
        self.worker.on_start(self.worker_id)
        async with aiohttp.ClientSession(headers=headers) as http:
            await self._register(http, base)
            log.info("worker %s serves %s at %s", self.worker_id, self.worker.name, base)
            beat = asyncio.create_task(self._heartbeats(http, base))
            try:
                yield
            finally:
                beat.cancel()
                self.worker.on_stop()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    await http.post(
                        base + "/worker/stop_worker",
                        json={"worker_id": self.worker_id, "permanent": False},
                        timeout=aiohttp.ClientTimeout(total=5),
                    )

    async def _register(self, http: aiohttp.ClientSession, base: str) -> None:
        body = {**self.info(), "secret_key": self.secret}
        async with http.post(base + "/worker/register_worker", json=body) as response:
            if response.status != 200:
                detail = (await response.text())[:300]
                raise RuntimeError(f"registration refused ({response.status}): {detail}")

    async def _heartbeats(self, http: aiohttp.ClientSession, base: str) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat_seconds)
            try:
                await self._register(http, base)
            except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
                log.warning("heartbeat failed: %s", exc)

    def app(self) -> Starlette:
        prefix = self.options.route_prefix

        async def info(_request: Request) -> Response:
            return Response(orjson.dumps(self.info()), media_type="application/json")

        async def status(_request: Request) -> Response:
            return Response(orjson.dumps(self.status()), media_type="application/json")

        async def gate(request: Request) -> Response:
            return await self.gate(request)

        return Starlette(
            routes=[
                Route(prefix + "/worker_unified_gate/", gate, methods=["POST"]),
                Route(prefix + "/worker/unified_gate/", gate, methods=["POST"]),
                Route(prefix + "/worker/get_worker_info", info, methods=["POST"]),
                Route(prefix + "/worker/get_status", status, methods=["GET"]),
                Route(prefix + "/worker_get_status", status, methods=["GET"]),
            ],
            lifespan=self.membership,
            exception_handlers={HTTPException: http_error},
        )


async def call_arguments(request: Request) -> tuple[list[Any], dict[str, Any]]:
    raw = await request.body()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"the body is not JSON: {exc}") from None
    args, kwargs = body.get("args") or [], body.get("kwargs") or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise HTTPException(400, "'args' must be a list and 'kwargs' an object")
    return args, kwargs


def fit_kwargs(function: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Drop ``stream`` (the hepai client's streaming flag) for a method that takes no such
    argument, so a generator method works whether or not the caller asked to stream."""
    if "stream" not in kwargs:
        return kwargs
    parameters = inspect.signature(function).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if "stream" in parameters or takes_any:
        return kwargs
    return {k: v for k, v in kwargs.items() if k != "stream"}


async def invoke(function: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(function):
        return await function(*args, **kwargs)
    if inspect.isasyncgenfunction(function) or inspect.isgeneratorfunction(function):
        return function(*args, **kwargs)
    # A plain method may block: it runs in a thread (which sees the call's context).
    return await asyncio.to_thread(function, *args, **kwargs)


async def frames(result: Any) -> AsyncIterator[bytes]:
    """Each streamed item as one chunk: bytes and str as they are, anything else as an SSE
    ``data:`` frame of its JSON."""
    items = result if inspect.isasyncgen(result) else iterate_in_threadpool(result)
    async for item in items:
        if isinstance(item, bytes):
            yield item
        elif isinstance(item, str):
            yield item.encode()
        else:
            yield b"data: " + orjson.dumps(item) + b"\n\n"


def error_response(exc: Exception) -> Response:
    status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 400)
    detail = f"{type(exc).__name__}: {exc}"
    return Response(
        orjson.dumps({"detail": detail}), status_code=status, media_type="application/json"
    )


async def http_error(_request: Request, exc: Exception) -> Response:
    """Refusals in FastAPI's shape, ``{"detail": ...}``, as the hepai SDK's workers send them."""
    assert isinstance(exc, HTTPException)
    return Response(
        orjson.dumps({"detail": exc.detail}),
        status_code=exc.status_code,
        media_type="application/json",
    )


def caller_of(request: Request, platform_url: str) -> CallContext:
    headers = request.headers
    return CallContext(
        user_id=headers.get("x-hepai-user-id"),
        username=headers.get("x-hepai-username"),
        email=headers.get("x-hepai-user-email"),
        api_key_id=headers.get("x-hepai-api-key-id"),
        request_id=headers.get("x-request-id"),
        file_grant=headers.get("x-hepai-file-grant"),
        platform_url=platform_url,
    )


def serve(worker: Worker, options: WorkerOptions) -> None:
    """Run the worker until interrupted; it deregisters on the way out.

    The socket listens before the worker registers (the registration runs in the app's
    startup, after this bind), so the platform never routes a call to a port nobody holds;
    port 0 takes a free port, which the registration then names.
    """
    sock = listen(options.host, options.port)
    options = replace(options, port=int(sock.getsockname()[1]))
    service = WorkerService(worker, options)
    config = uvicorn.Config(
        service.app(),
        host=options.host,
        port=options.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
