"""Calling the methods of worker-hosted models: which worker, failover, task lookups, relaying.

Every caller of a worker goes through the one ``Dispatcher`` a process builds: the unified
gate, the OpenAI routes to worker models (through the proxy, with the same session and the
same count of calls in flight), the playground, and the management calls the platform makes
(status refresh, shutdown).

A call goes to a live worker of the model that the caller may use, with the caller's identity
in the headers; a connection failure moves on to the next worker. A task lives on the worker
it was submitted to (wire spec §4.3), while calls spread across every worker of a model. So a
task lookup (``status``, ``result``, ``cancel``) that a worker answers 404 is asked of the
model's next worker: with several workers of hepai/mineru, ``HepAI().parse()`` finds its task
wherever it runs, with no shared state among the workers. A ``submit`` with an idempotency key
goes to the worker the key picks, so a retry finds the task the first attempt started.

Workers are not trusted (security/egress.py): their addresses are admitted at registration by
the egress guard, every URL is built from the parsed address and a fixed path of the hepai
protocol, redirects are never followed, and the connection pools check the address of every
connection they open. A worker answering with a redirect gets the call failed, not followed.

While the database does not answer, a caller's calls keep going to the workers the registry last
named for them (within the worker expiry, as a heartbeat would have kept them live), so the
institute's self-hosted models stay up through a database failover as provider models do.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import IO, Any, cast

import aiohttp
import orjson
from sqlalchemy import Engine

from hepai_server.config import ModelType
from hepai_server.db.engine import transact
from hepai_server.db.tables import Worker
from hepai_server.errors import (
    DatabaseUnavailable,
    HepAIError,
    InvalidRequest,
    ModelNotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from hepai_server.files import grant
from hepai_server.files.grant import FileGrants
from hepai_server.gateway import registry
from hepai_server.gateway.asgi import DisconnectWatch, Receive, Send, send_bytes
from hepai_server.gateway.catalog import Deployment, Model, gate_url
from hepai_server.gateway.registry import WorkerRoute
from hepai_server.gateway.routing import Occupancy, keyed, spread
from hepai_server.protocol.openai import Endpoint
from hepai_server.protocol.sse import error_event
from hepai_server.security.egress import EgressPolicy, SocketFactory, WorkerAddress, parse_address
from hepai_server.services.accounts import Caller

READ_CHUNK = 1024 * 1024
STREAM_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
#: The task protocol's lookups: idempotent, and answered 404 by a worker without the task.
TASK_LOOKUPS = frozenset({"status", "result", "cancel"})
#: How long the platform waits for a worker's own status or shutdown route.
MANAGEMENT_SECONDS = 5.0
#: How many (key, model) lookups are remembered for a database outage.
KNOWN_ROUTES = 4096


class WorkerSessions:
    """The connection pools calls to workers go through: one for the workers of trusted owners
    (admins, the platform's own), one for everyone else's. Each checks the address of every
    connection it opens against the egress policy, after DNS."""

    def __init__(
        self, make: Callable[[SocketFactory], aiohttp.ClientSession], policy: EgressPolicy
    ) -> None:
        self.trusted = make(policy.socket_factory(trusted=True))
        self.untrusted = make(policy.socket_factory(trusted=False))

    def for_owner(self, *, trusted: bool) -> aiohttp.ClientSession:
        return self.trusted if trusted else self.untrusted

    async def close(self) -> None:
        await self.trusted.close()
        await self.untrusted.close()


@dataclass(frozen=True, slots=True)
class Answer:
    """A worker's open response to one call, and which worker gave it."""

    response: aiohttp.ClientResponse
    worker_id: str


class Dispatcher:
    def __init__(
        self,
        *,
        sessions: WorkerSessions,
        policy: EgressPolicy,
        engine: Engine,
        grants: FileGrants,
        occupancy: Occupancy,
        rng: random.Random,
        expiry: float,
    ) -> None:
        #: The pools every call to a worker goes through.
        self.sessions = sessions
        self._policy = policy
        self._engine = engine
        self._grants = grants
        self._occupancy = occupancy
        self._rng = rng
        self._expiry = expiry
        #: (key, model) -> (when looked up, the routes then): what a database outage falls back on.
        self._known: OrderedDict[tuple[int, str], tuple[float, list[WorkerRoute]]] = OrderedDict()

    async def routes(self, caller: Caller, model: str) -> list[WorkerRoute]:
        """Live workers of a model the caller may call: 404 if it may not (or none exists),
        503 if none is alive."""
        expiry = self._expiry
        try:
            routes = await transact(
                self._engine,
                lambda s: registry.routes_for(
                    s, caller=caller, model_name=model, now=time.time(), expiry=expiry
                ),
            )
        except DatabaseUnavailable:
            remembered = self._remembered(caller, model)
            if remembered is None:
                raise
            return remembered
        if routes is None:
            raise ModelNotFound(model)
        if not routes:
            raise ServiceUnavailable(f"no worker of {model} is alive right now")
        self._remember(caller, model, routes)
        return routes

    def _remember(self, caller: Caller, model: str, routes: list[WorkerRoute]) -> None:
        known = self._known
        known[caller.key_id, model] = (time.monotonic(), routes)
        known.move_to_end((caller.key_id, model))
        if len(known) > KNOWN_ROUTES:
            known.popitem(last=False)

    def _remembered(self, caller: Caller, model: str) -> list[WorkerRoute] | None:
        """The routes this key last had for the model, while younger than the worker expiry."""
        seen = self._known.get((caller.key_id, model))
        if seen is None or time.monotonic() - seen[0] > self._expiry:
            return None
        return seen[1]

    async def admit(self, raw: object, *, trusted: bool) -> WorkerAddress:
        """A worker's address as the platform will call it, or a 4xx naming the rule it
        breaks (InvalidRequest for its form, AddressRefused for where it leads)."""
        address = parse_address(raw)
        await self.check(address, trusted=trusted)
        return address

    async def check(self, address: WorkerAddress, *, trusted: bool) -> None:
        """Refuse an address the platform may not call (AddressRefused, naming the rule)."""
        await asyncio.to_thread(self._policy.check, address, trusted=trusted)

    def load(self, route: WorkerRoute) -> float:
        return (route.queue_length + self._occupancy[route.worker_id]) / route.speed

    async def call(
        self,
        caller: Caller,
        routes: list[WorkerRoute],
        *,
        model: str,
        function: str,
        body: IO[bytes],
        request_id: str,
    ) -> Answer:
        """Send the call to the best worker, the next on a connection failure (or, for a task
        lookup, on a 404); the answer is open for the caller to relay and release."""
        size = body.tell()
        headers = identity_headers(caller, request_id)
        headers["content-type"] = "application/json"
        headers["content-length"] = str(size)
        ordered = spread(routes, self._rng, self.load)
        if size <= grant.SCAN_LIMIT:
            body.seek(0)
            try:
                parsed = orjson.loads(body.read())
            except orjson.JSONDecodeError:
                parsed = None
            if file_ids := grant.file_ids_in(parsed):
                headers[grant.HEADER] = self._grants.mint(caller.user_id, file_ids)
            if function == "submit" and (key := idempotency_key(parsed)):
                ordered = keyed(ordered, f"{caller.user_id}:{key}", lambda r: r.worker_id)
        failure: HepAIError = ServiceUnavailable(f"no worker of {model} answered")
        unreachable = False
        for position, route in enumerate(ordered, 1):
            body.seek(0)
            url = gate_url(route.address, model, function)
            session = self.sessions.for_owner(trusted=route.trusted)
            try:
                with self._occupancy.holding(route.worker_id):
                    response = await session.post(
                        url, data=read_chunks(body), headers=headers, allow_redirects=False
                    )
            except aiohttp.ClientConnectionError as exc:
                if isinstance(exc, aiohttp.ServerTimeoutError):
                    raise UpstreamTimeout(f"worker of {model} did not answer in time") from None
                failure = ServiceUnavailable(f"no worker of {model} could be reached")
                unreachable = True
                continue
            except TimeoutError:
                raise UpstreamTimeout(f"worker of {model} did not answer in time") from None
            if 300 <= response.status < 400:
                response.release()
                raise UpstreamError(
                    f"a worker of {model} answered with a redirect, which the platform never "
                    "follows"
                )
            if response.status == 404 and function in TASK_LOOKUPS:
                if position < len(ordered):
                    response.release()  # not this worker's task: maybe the next one's
                    continue
                if unreachable:
                    response.release()  # the task may be on the worker that is down
                    raise failure
            return Answer(response, route.worker_id)
        raise failure

    async def relay(self, answer: Answer, request_id: str, receive: Receive, send: Send) -> None:
        """JSON and errors whole with their status and type; anything else streamed as SSE."""
        response = answer.response
        content_type = response.headers.get("content-type", "application/json")
        if response.status != 200 or content_type.startswith("application/json"):
            raw = await response.read()
            await send_bytes(
                send,
                response.status,
                raw,
                request_id=request_id,
                content_type=content_type.encode(),
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

    async def model(
        self, caller: Caller, model_id: str, endpoint: Endpoint, request_id: str
    ) -> Model:
        """A worker-hosted model as the proxy relays it: one deployment per live worker, each
        called through its unified gate with the endpoint's method (wire spec §2.10) and the
        caller's identity."""
        routes = await self.routes(caller, model_id)
        headers = {**identity_headers(caller, request_id), "content-type": "application/json"}
        deployments = tuple(
            Deployment(
                provider=f"worker:{route.worker_id}",
                base_url=str(route.address),
                upstream_model=model_id,
                headers=headers,
                weight=route.weight,
                priority=route.priority,
                worker_id=route.worker_id,
                queue_length=route.queue_length,
                speed=route.speed,
                worker_address=route.address,
                trusted=route.trusted,
                messages_url=gate_url(route.address, model_id, "anthropic_messages")
                if "anthropic_messages" in route.functions
                else None,
                messages_headers=headers,
                responses_url=gate_url(route.address, model_id, "responses")
                if "responses" in route.functions
                else None,
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

    async def manage(self, worker: Worker, method: str, path: str) -> Any:
        """A worker's own management route (``/worker/get_status``, ``/shutdown_worker``):
        its JSON, or None when it does not answer (or its address is no longer one the
        platform calls)."""
        try:
            address = parse_address(worker.address)
        except InvalidRequest:
            return None
        session = self.sessions.for_owner(trusted=worker.owner.is_admin)
        try:
            async with session.request(
                method,
                address.url(path),
                timeout=aiohttp.ClientTimeout(total=MANAGEMENT_SECONDS),
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    return None
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None


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


def idempotency_key(call: object) -> str | None:
    """The idempotency key of a task submit (wire spec §4.3), if it carries one."""
    kwargs = call.get("kwargs") if isinstance(call, dict) else None
    key = kwargs.get("idempotency_key") if isinstance(kwargs, dict) else None
    return key if isinstance(key, str) and key else None


async def read_chunks(body: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := body.read(READ_CHUNK):
        yield chunk
