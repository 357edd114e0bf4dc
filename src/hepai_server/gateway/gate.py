"""The unified gate: call a method of a worker-hosted model, as the hepai SDK does.

``POST /worker/unified_gate/?model=M&function=F`` with ``{"args": [...], "kwargs": {...}}``
goes to a live worker of M that the caller may use, with the caller's identity in the headers.
The body is spooled (to disk past a few megabytes), so a 200 MB base64 PDF neither sits in
memory nor blocks a retry on the next worker. The worker's answer comes back as it is: status,
JSON body and content type; a streamed answer is relayed chunk by chunk as text/event-stream.

A task lives on the worker it was submitted to (wire spec §4.3), while the gate spreads calls
across every worker of a model. So a task lookup (``status``, ``result``, ``cancel``) that a
worker answers 404 is asked of the model's next worker: with several workers of hepai/mineru,
``HepAI().parse()`` finds its task wherever it runs, with no shared state among the workers.
A ``submit`` with an idempotency key goes to the worker the key picks, so a retry finds the
task the first attempt started.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import tempfile
import time
from collections.abc import AsyncIterator
from time import perf_counter
from typing import IO, cast
from urllib.parse import parse_qs, urlencode

import aiohttp
import orjson

from hepai_server.accounts import Caller
from hepai_server.config import ModelType
from hepai_server.errors import (
    HepAIError,
    InvalidRequest,
    ModelNotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from hepai_server.files import grant
from hepai_server.gateway import registry
from hepai_server.gateway.asgi import (
    ClientDisconnected,
    DisconnectWatch,
    Receive,
    Scope,
    Send,
    body_chunks,
    client_request_id,
    parse_content_length,
    refuse_declared,
    send_bytes,
    send_error,
)
from hepai_server.gateway.auth import token_from_headers
from hepai_server.gateway.catalog import Deployment, Model, gate_url
from hepai_server.gateway.multipart import is_multipart, multipart_to_json
from hepai_server.gateway.routing import worker_order
from hepai_server.gateway.runtime import Gateway
from hepai_server.protocol.openai import Endpoint, Usage
from hepai_server.protocol.sse import error_event

#: Bodies up to this size stay in memory while they are forwarded; larger ones go to disk.
SPOOL_IN_MEMORY = 4 * 1024 * 1024
READ_CHUNK = 1024 * 1024
STREAM_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
#: The task protocol's lookups: idempotent, and answered 404 by a worker without the task.
TASK_LOOKUPS = frozenset({"status", "result", "cancel"})


class UnifiedGate:
    """The raw ASGI endpoint behind /worker/unified_gate and /worker_unified_gate."""

    def __init__(self) -> None:
        self._rng = random.Random()
        self._inflight: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        gateway: Gateway = scope["state"]["gateway"]
        headers = dict(scope["headers"])
        request_id = client_request_id(headers.get(b"x-request-id"))
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        model = (query.get("model") or [""])[0]
        function = (query.get("function") or ["__call__"])[0]
        caller: Caller | None = None
        status, error_text, worker_id, usage = 200, None, None, Usage()
        try:
            caller = await self.authenticate(scope, headers)
            if not model:
                raise InvalidRequest("the 'model' query parameter is required", param="model")
            routes = await live_routes(gateway, caller, model)
            limit = gateway.settings.gate_max_body_bytes
            refuse_declared(parse_content_length(headers.get(b"content-length")), limit)
            with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as body:
                if is_multipart(headers.get(b"content-type", b"")):
                    await multipart_to_json(scope, receive, body, limit=limit)
                else:
                    async for chunk in body_chunks(receive, limit=limit):
                        body.write(chunk)
                status, worker_id, usage = await self._forward(
                    gateway, caller, routes, model, function, body, request_id, receive, send
                )
        except ClientDisconnected:
            status, error_text = 499, "client closed the connection"
        except HepAIError as error:
            status, error_text = error.status, error.message
            await send_error(send, error, request_id=request_id)
        finally:
            if caller is not None:
                gateway.recorder.record(
                    request_id=request_id,
                    user_id=caller.user_id,
                    api_key_id=caller.key_id,
                    endpoint=f"worker.{function}"[:32],
                    model=model[:256],
                    deployment=worker_id,
                    stream=False,
                    status_code=status,
                    usage=usage,
                    latency_ms=(perf_counter() - started) * 1000,
                    error=error_text,
                )

    async def authenticate(self, scope: Scope, headers: dict[bytes, bytes]) -> Caller:
        """Who calls: the API key's owner (the portal's playground asks the session instead)."""
        gateway: Gateway = scope["state"]["gateway"]
        return await gateway.auth.authenticate(token_from_headers(headers))

    async def _forward(
        self,
        gateway: Gateway,
        caller: Caller,
        routes: list[registry.WorkerRoute],
        model: str,
        function: str,
        body: IO[bytes],
        request_id: str,
        receive: Receive,
        send: Send,
    ) -> tuple[int, str | None, Usage]:
        """Send the call to the best worker, the next on a connection failure; relay the answer.

        Returns the status, the worker, and what the worker reported it consumed."""
        size = body.tell()
        headers = identity_headers(caller, request_id)
        headers["content-type"] = "application/json"
        headers["content-length"] = str(size)
        ordered = worker_order(routes, self._rng, self._inflight)
        if size <= grant.SCAN_LIMIT:
            body.seek(0)
            raw = body.read()
            if file_ids := grant.file_ids_in(raw):
                headers[grant.HEADER] = gateway.grants.mint(caller.user_id, file_ids)
            if function == "submit" and (key := idempotency_key(raw)):
                ordered = keyed_order(ordered, f"{caller.user_id}:{key}")
        query = urlencode({"model": model, "function": function})
        failure: HepAIError = ServiceUnavailable(f"no worker of {model} answered")
        unreachable = False
        for position, route in enumerate(ordered, 1):
            body.seek(0)
            url = f"{route.address}/worker_unified_gate/?{query}"
            self._inflight[route.worker_id] = self._inflight.get(route.worker_id, 0) + 1
            try:
                response = await gateway.session.post(url, data=read_chunks(body), headers=headers)
            except aiohttp.ClientConnectionError as exc:
                if isinstance(exc, aiohttp.ServerTimeoutError):
                    raise UpstreamTimeout(f"worker of {model} did not answer in time") from None
                failure = ServiceUnavailable(f"no worker of {model} could be reached")
                unreachable = True
                continue
            except TimeoutError:
                raise UpstreamTimeout(f"worker of {model} did not answer in time") from None
            finally:
                self._inflight[route.worker_id] -= 1
            if response.status == 404 and function in TASK_LOOKUPS:
                if position < len(ordered):
                    response.release()  # not this worker's task: maybe the next one's
                    continue
                if unreachable:
                    response.release()  # the task may be on the worker that is down
                    raise failure
            try:
                await relay_answer(response, request_id, receive, send)
            finally:
                response.release()
            usage = Usage.from_tool_header(response.headers.get("x-hepai-usage"))
            return response.status, route.worker_id, usage
        raise failure


async def worker_model(
    gateway: Gateway, caller: Caller, model_id: str, endpoint: Endpoint, request_id: str
) -> Model:
    """A worker-hosted model as the OpenAI relay sees it: one deployment per live worker, each
    called through its unified gate with the endpoint's method (wire spec §2.10) and the
    caller's identity."""
    routes = await live_routes(gateway, caller, model_id)
    headers = {**identity_headers(caller, request_id), "content-type": "application/json"}
    deployments = tuple(
        Deployment(
            provider=f"worker:{route.worker_id}",
            base_url=route.address,
            upstream_model=model_id,
            headers=headers,
            weight=route.weight,
            priority=route.priority,
            worker_id=route.worker_id,
            messages_url=gate_url(route.address, model_id, "anthropic_messages")
            if "anthropic_messages" in route.functions
            else None,
            messages_headers=headers,
        )
        for route in routes
    )
    return Model(
        id=model_id,
        # A worker serves whatever its methods serve: the endpoint asked for decides.
        type=cast(ModelType, next(iter(endpoint.model_types))),
        owned_by="",
        created=0,
        groups=frozenset(),
        users=frozenset(),
        deployments=deployments,
    )


def identity_headers(caller: Caller, request_id: str) -> dict[str, str]:
    """Who is calling, in the headers the hepai worker middleware reads (wire spec §2.7)."""
    headers = {
        "x-hepai-user-id": str(caller.user_id),
        "x-hepai-api-key-owner-id": str(caller.user_id),
        "x-hepai-api-key-id": str(caller.key_id),
        "x-hepai-username": caller.username,
        "x-request-id": request_id,
    }
    if caller.email:
        headers["x-hepai-user-email"] = caller.email
    return headers


async def live_routes(gateway: Gateway, caller: Caller, model: str) -> list[registry.WorkerRoute]:
    """Live workers of a model the caller may call: 404 if it may not (or none exists), 503 if
    none is alive."""
    expiry = gateway.settings.worker_expiry_seconds
    routes = await gateway.transact(
        lambda s: registry.routes_for(
            s, caller=caller, model_name=model, now=time.time(), expiry=expiry
        )
    )
    if routes is None:
        raise ModelNotFound(model)
    if not routes:
        raise ServiceUnavailable(f"no worker of {model} is alive right now")
    return routes


def idempotency_key(raw: bytes) -> str | None:
    """The idempotency key of a task submit (wire spec §4.3), if it carries one."""
    try:
        call = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    kwargs = call.get("kwargs") if isinstance(call, dict) else None
    key = kwargs.get("idempotency_key") if isinstance(kwargs, dict) else None
    return key if isinstance(key, str) and key else None


def keyed_order(routes: list[registry.WorkerRoute], key: str) -> list[registry.WorkerRoute]:
    """The workers in an order fixed by ``key`` (rendezvous hashing), the most preferred
    priority first: a submit retried with the same idempotency key reaches the worker that
    holds its task, and workers joining or leaving move only the keys they take or held."""

    def rank(route: registry.WorkerRoute) -> tuple[int, bytes]:
        digest = hashlib.blake2b(f"{key}\0{route.worker_id}".encode(), digest_size=8)
        return route.priority, digest.digest()

    return sorted(routes, key=rank)


async def read_chunks(body: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := body.read(READ_CHUNK):
        yield chunk


async def relay_answer(
    response: aiohttp.ClientResponse, request_id: str, receive: Receive, send: Send
) -> None:
    """JSON and errors whole with their status and type; anything else streamed as SSE."""
    content_type = response.headers.get("content-type", "application/json")
    if response.status != 200 or content_type.startswith("application/json"):
        raw = await response.read()
        await send_bytes(
            send, response.status, raw, request_id=request_id, content_type=content_type.encode()
        )
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*STREAM_HEADERS, (b"x-request-id", request_id.encode())],
        }
    )
    async with DisconnectWatch(receive) as watch:
        send = watch.guard(send)
        try:
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            watch.withdraw()
            response.close()
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = UpstreamError(f"the worker's stream broke: {type(exc).__name__}")
            await send(
                {"type": "http.response.body", "body": error_event(error), "more_body": True}
            )
    await send({"type": "http.response.body", "body": b"", "more_body": False})
