"""Opening a call's upstream response: which deployment, and what to do when it fails.

Deployments are tried in the selection policy's order (routing.spread), the cooled-down ones
left out (resilience.Breaker) unless nothing else is left, each with its model's timeouts
(connect, first byte, idle between chunks; the total is the proxy's). A connection failure, a
timeout, a 5xx or a 429 moves on to the next deployment while the retry budget allows; when
every deployment of the model failed before answering, the model's fallbacks are tried the
same way (only those the caller may call), and the usage row says which model served.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from hepai_server.errors import HepAIError, InvalidRequest, UpstreamError, UpstreamTimeout
from hepai_server.gateway.catalog import Catalog, Deployment, Model
from hepai_server.gateway.dispatch import WorkerSessions
from hepai_server.gateway.proxy import Call, Outcome, Payload
from hepai_server.gateway.resilience import Breaker, RetryBudget
from hepai_server.gateway.routing import Occupancy, spread


class Upstreams:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        workers: WorkerSessions,
        occupancy: Occupancy,
        rng: random.Random,
        *,
        breaker: Breaker,
        budget: RetryBudget,
        catalog: Catalog,
    ) -> None:
        self._session = session
        #: Calls to workers go through the dispatcher's pools, whose connections are checked.
        self._workers = workers
        self._occupancy = occupancy
        self._rng = rng
        self.breaker = breaker
        self._budget = budget
        #: The catalog in force, where fallbacks are found (replaced on every reload).
        self.catalog = catalog

    async def open(self, call: Call, outcome: Outcome) -> aiohttp.ClientResponse:
        """The first usable upstream response; the last failure raised when there is none."""

        def build(deployment: Deployment) -> tuple[str, Payload, dict[str, str]]:
            dialect = call.dialect
            target = dialect.native(deployment) if dialect is not None else None
            outcome.native = target is not None
            if target is not None:
                url, headers = target
            else:
                url, headers = deployment.url(call.endpoint), deployment.headers
            return url, self._payload(call, deployment, native=outcome.native), headers

        self._budget.request()
        failure = await self._try(call.model, outcome, build, first=True)
        if not isinstance(failure, HepAIError):
            return failure
        for fallback in call.model.fallbacks:
            model = self.catalog.resolve_or_none(fallback, call.caller)
            if model is None or model.type != call.model.type:
                continue
            answered = await self._try(model, outcome, build, first=False)
            if not isinstance(answered, HepAIError):
                outcome.fallback = model.id
                return answered
            failure = answered
        raise failure

    async def attempt(
        self,
        model: Model,
        outcome: Outcome,
        build: Callable[[Deployment], tuple[str, Payload, dict[str, str]]],
        *,
        again: Callable[[], bool] | None = None,
    ) -> aiohttp.ClientResponse:
        """The first usable response of a deployment of ``model`` to what ``build`` makes for
        it (URL, body, headers): for calls that are not chat-shaped JSON (audio, images).
        ``again`` says whether another deployment may still be tried (a body streamed from
        the client cannot be sent twice)."""
        self._budget.request()
        answered = await self._try(model, outcome, build, first=True, again=again)
        if isinstance(answered, HepAIError):
            raise answered
        return answered

    async def _try(
        self,
        model: Model,
        outcome: Outcome,
        build: Callable[[Deployment], tuple[str, Payload, dict[str, str]]],
        *,
        first: bool,
        again: Callable[[], bool] | None = None,
    ) -> aiohttp.ClientResponse | HepAIError:
        """The model's first usable answer, or why there was none (a 4xx answer about the
        request itself is an answer: it is returned)."""
        breaker = self.breaker
        ordered = spread(model.deployments, self._rng, self._load)
        ready = [d for d in ordered if not breaker.cooled(d.name)]
        # With everything cooling down, still try: a probe beats refusing outright.
        attempts = ready or ordered[:1]
        failure: HepAIError | None = None
        for number, deployment in enumerate(attempts, 1):
            if (number > 1 or not first) and (
                (again is not None and not again()) or not self._budget.retry()
            ):
                break
            if not breaker.available(deployment.name) and ready:
                continue
            outcome.deployment, outcome.served_by = deployment, deployment.name
            url, payload, headers = build(deployment)
            try:
                response = await self._post(model, deployment, url, payload, headers)
            except TimeoutError:
                breaker.failed(deployment.name)
                failure = UpstreamTimeout(f"{deployment.provider} did not answer in time")
                continue
            except aiohttp.ClientError as exc:
                breaker.failed(deployment.name)
                failure = UpstreamError(
                    f"could not reach {deployment.provider}: {exc.__class__.__name__}"
                )
                continue
            except BaseException:
                breaker.released(deployment.name)
                raise
            if response.status >= 500 or response.status == 429:
                breaker.failed(deployment.name)
                more = number < len(attempts) or bool(model.fallbacks)
                if more and (again is None or again()):
                    response.release()
                    failure = UpstreamError(f"{deployment.provider} answered {response.status}")
                    continue
                return response
            breaker.succeeded(deployment.name)
            return response
        # Built only now: a request that gets an answer has no use for it.
        return failure or UpstreamError(f"no deployment of {model.id} answered")

    def _load(self, deployment: Deployment) -> float:
        if deployment.worker_id is None:
            return 0.0
        queued = deployment.queue_length + self._occupancy[deployment.worker_id]
        return queued / deployment.speed

    async def _post(
        self,
        model: Model,
        deployment: Deployment,
        url: str,
        payload: Payload,
        headers: dict[str, str],
    ) -> aiohttp.ClientResponse:
        timeouts = model.timeouts
        if deployment.worker_id is None:
            session = self._session
        else:
            session = self._workers.for_owner(trusted=deployment.trusted)
        if timeouts is None:
            if deployment.worker_id is None:
                return await self._post_on(session, url, payload, headers, None)
            with self._occupancy.holding(deployment.worker_id):
                return await self._post_on(session, url, payload, headers, None)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeouts.connect, sock_read=timeouts.idle
        )
        async with asyncio.timeout(timeouts.first_byte):
            if deployment.worker_id is None:
                return await self._post_on(session, url, payload, headers, timeout)
            with self._occupancy.holding(deployment.worker_id):
                return await self._post_on(session, url, payload, headers, timeout)

    @staticmethod
    async def _post_on(
        session: aiohttp.ClientSession,
        url: str,
        payload: Payload,
        headers: dict[str, str],
        timeout: aiohttp.ClientTimeout | None,
    ) -> aiohttp.ClientResponse:
        options: dict[str, Any] = {"data": payload, "headers": headers, "allow_redirects": False}
        if timeout is not None:
            options["timeout"] = timeout
        try:
            return await session.post(url, **options)
        except aiohttp.ServerDisconnectedError:
            if not isinstance(payload, bytes):
                raise  # a body streamed from the client is gone
            # The upstream closed a pooled keep-alive connection: one fresh try is safe.
            return await session.post(url, **options)

    def _payload(self, call: Call, deployment: Deployment, *, native: bool) -> bytes:
        if native and call.dialect is not None:
            body = call.dialect.native_body(deployment)
            body["model"] = deployment.upstream_model
            return self._encode(body, deployment)
        body = call.body
        body["model"] = deployment.upstream_model
        if call.stream:
            options = body.get("stream_options") or {}
            body["stream_options"] = {**options, "include_usage": True}
        if call.wants_base64:
            body["encoding_format"] = "float"
        return self._encode(body, deployment)

    @staticmethod
    def _encode(body: dict[str, Any], deployment: Deployment) -> bytes:
        try:
            # A worker takes the request as the keyword arguments of its method.
            return orjson.dumps({"kwargs": body} if deployment.worker_id else body)
        except orjson.JSONEncodeError:
            # orjson reads 1023 levels of nesting but writes only 254.
            raise InvalidRequest("the request body is nested too deeply") from None
