"""relay(): send one request to a deployment of its model and stream the answer back.

The request body is forwarded as the client sent it except for ``model`` (the upstream's name)
and, on streams, ``stream_options.include_usage`` (so usage can be recorded). The answer is relayed
as bytes: JSON whole, SSE event by event as it arrives, with only the model id rewritten. Usage is
read on the way past into the ``Outcome``, which the endpoint's frame turns into the usage row.
Worker-hosted models are relayed the same way, to their workers' unified gates, through the
dispatcher's session and with the calls in flight counted against each worker.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import sys
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from hepai_server.errors import (
    HepAIError,
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from hepai_server.gateway.asgi import DisconnectWatch, Receive, Send, send_bytes
from hepai_server.gateway.catalog import Deployment, Model
from hepai_server.gateway.dialect import Dialect, Translator
from hepai_server.protocol.openai import EMBEDDINGS, Endpoint, Usage
from hepai_server.protocol.sse import (
    DONE,
    EventSplitter,
    ModelRewriter,
    error_event,
    event_bounds,
    event_data,
    rewrite_model,
)
from hepai_server.services.accounts import Caller

#: A request body for an upstream: whole, or streamed as it arrives from the client.
Payload = bytes | AsyncIterator[bytes]

if TYPE_CHECKING:
    from hepai_server.gateway.upstream import Upstreams

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
#: The status recorded for a request whose client went away before the answer was complete.
CLIENT_CLOSED = 499


@dataclass(slots=True)
class Call:
    """One authenticated, checked request on its way to an upstream."""

    request_id: str
    caller: Caller
    endpoint: Endpoint
    model: Model
    body: dict[str, Any]
    started: float
    stream: bool
    #: The client asked for the usage chunk itself (the gateway always asks the upstream).
    wants_usage: bool
    #: The client asked for base64 embeddings (the gateway asks the upstream for floats).
    wants_base64: bool
    #: The client speaks another API (Anthropic Messages, Responses): deployments that speak it
    #: get the request as the dialect says; others get ``body``, its translation to a chat
    #: completion, and answers are translated back.
    dialect: Dialect | None = None

    @classmethod
    def create(
        cls,
        *,
        request_id: str,
        caller: Caller,
        endpoint: Endpoint,
        model: Model,
        body: dict[str, Any],
        started: float,
        dialect: Dialect | None = None,
    ) -> Call:
        options = body.get("stream_options")
        return cls(
            request_id=request_id,
            caller=caller,
            endpoint=endpoint,
            model=model,
            body=body,
            started=started,
            stream=endpoint.can_stream and body.get("stream") is True,
            wants_usage=isinstance(options, dict) and options.get("include_usage") is True,
            wants_base64=endpoint is EMBEDDINGS and body.get("encoding_format") == "base64",
            dialect=dialect,
        )


@dataclass(slots=True)
class Outcome:
    """What one request produced, for its usage row: filled by whoever answered it."""

    deployment: Deployment | None = None
    #: The deployment or worker that answered, as the usage row names it.
    served_by: str | None = None
    status: int = 200
    usage: Usage | None = None
    first_byte_at: float | None = None
    error: str | None = None
    #: Stream chunks with a delta relayed to the client: the estimate of completion tokens
    #: when the upstream reported no usage (a client that left early, a broken stream).
    delivered: int = 0
    #: The deployment answers in the client's own API (the call's dialect), not translated.
    native: bool = False
    #: The fallback model that answered, when the requested one could not.
    fallback: str | None = None
    #: The answer was cut after the upstream had the request (the client left, the stream
    #: broke, the server shut down): what was used is estimated if the upstream did not say.
    cut: bool = False

    def fail(self, status: int, error: str) -> None:
        self.status, self.error = status, error

    def final_usage(self, prompt_estimate: int) -> Usage:
        """What the request used: as the upstream reported it; for an answer cut before the
        upstream said, the prompt estimated from its size and the chunks delivered; else
        nothing (refused before any upstream had it)."""
        if self.usage is not None:
            return self.usage
        if self.cut or self.delivered:
            completion = self.delivered
            return Usage(
                prompt_tokens=prompt_estimate,
                completion_tokens=completion,
                total_tokens=prompt_estimate + completion,
                estimated=True,
            )
        return Usage()


class Proxy:
    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams

    async def relay(self, call: Call, outcome: Outcome, receive: Receive, send: Send) -> None:
        """Answer the call from an upstream, noting in ``outcome`` what happened; an error
        before the answer began is raised for the frame to send. A client that goes away
        cancels the upstream call at once, stream or not."""
        if call.stream:
            await self._relay_stream(call, outcome, receive, send)
            return
        timeouts = call.model.timeouts
        total = timeouts.total if timeouts is not None else None
        async with DisconnectWatch(receive) as watch:
            send = watch.guard(send)
            response: aiohttp.ClientResponse | None = None
            try:
                async with asyncio.timeout(total):
                    response = await self._upstreams.open(call, outcome)
                    await self._relay_whole(call, response, outcome, send)
            except TimeoutError:
                raise UpstreamTimeout(f"{call.model.id} did not answer within {total} s") from None
            except asyncio.CancelledError:
                if not watch.fired:
                    raise
                watch.withdraw()
                outcome.fail(CLIENT_CLOSED, "client closed the connection")
                outcome.cut = outcome.served_by is not None
            finally:
                if response is not None:
                    response.release()

    async def fetch(self, call: Call, outcome: Outcome) -> bytes:
        """The whole answer to a call the gateway makes itself (knowledge bases embedding and
        reranking), chosen and failed over as ``relay`` does; an upstream error is raised."""
        timeouts = call.model.timeouts
        total = timeouts.total if timeouts is not None else None
        try:
            async with asyncio.timeout(total):
                response = await self._upstreams.open(call, outcome)
                try:
                    raw = await response.read()
                finally:
                    response.release()
        except TimeoutError:
            raise UpstreamTimeout(f"{call.model.id} did not answer within {total} s") from None
        if 200 <= response.status < 300:
            raw, outcome.usage = finish_json(call, raw)
            return raw
        outcome.status, outcome.error = response.status, upstream_message(raw)
        raise_for_upstream(response.status, raw, outcome)
        raise InvalidRequest(f"{call.model.id} refused the request: {upstream_message(raw)}")

    async def _relay_whole(
        self, call: Call, response: aiohttp.ClientResponse, outcome: Outcome, send: Send
    ) -> None:
        raw = await response.read()
        if 200 <= response.status < 300:
            raw, outcome.usage = finish_json(call, raw, native=outcome.native)
            if call.dialect is not None and call.dialect.ready:
                await call.dialect.finishing()
        else:
            raise_for_upstream(response.status, raw, outcome)
            outcome.status, outcome.error = response.status, upstream_message(raw)
        content_type = response.headers.get("content-type", "application/json").encode("latin-1")
        await send_bytes(
            send,
            response.status,
            raw,
            request_id=call.request_id,
            content_type=content_type,
            extra={"x-hepai-deployment": outcome.served_by or ""},
        )

    async def _relay_stream(
        self, call: Call, outcome: Outcome, receive: Receive, send: Send
    ) -> None:
        """Relay SSE as it arrives; a client that goes away cancels the upstream at once."""
        response: aiohttp.ClientResponse | None = None
        finished = False
        async with DisconnectWatch(receive) as watch:
            send = watch.guard(send)
            try:
                response = await self._upstreams.open(call, outcome)
                if response.status != 200 or not is_event_stream(response, outcome.deployment):
                    await self._relay_whole(call, response, outcome, send)
                else:
                    await self._pump(call, response, outcome, send)
                finished = True
            except asyncio.CancelledError:
                if not watch.fired:
                    # The server is shutting down past its drain deadline: say so in the
                    # stream, and in the row.
                    outcome.fail(503, "the server shut down before the stream finished")
                    outcome.cut = outcome.served_by is not None
                    if outcome.first_byte_at is not None:
                        with contextlib.suppress(Exception):
                            await send(
                                {
                                    "type": "http.response.body",
                                    "body": error_event(
                                        ServiceUnavailable(
                                            "the server shut down before the stream finished"
                                        )
                                    ),
                                    "more_body": False,
                                }
                            )
                    raise
                watch.withdraw()
                outcome.fail(CLIENT_CLOSED, "client closed the connection")
                outcome.cut = outcome.served_by is not None
            finally:
                if response is not None:
                    response.release() if finished else response.close()

    async def _pump(
        self, call: Call, response: aiohttp.ClientResponse, outcome: Outcome, send: Send
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    *SSE_HEADERS,
                    (b"x-request-id", call.request_id.encode()),
                    (b"x-hepai-deployment", (outcome.served_by or "").encode()),
                ],
            }
        )
        rewriter = ModelRewriter(orjson.dumps(call.model.id))
        timeouts = call.model.timeouts
        deadline = call.started + timeouts.total if timeouts and timeouts.total else None
        splitter = EventSplitter()
        dialect = call.dialect
        translator: Translator | None = None
        if dialect is not None and not outcome.native:
            translator = dialect.translator(call.model.id)
        done = False
        try:
            async for chunk in response.content.iter_any():
                events = splitter.feed(chunk)
                if not events:
                    continue
                events = rewriter.rewrite(events)
                if outcome.native:
                    assert dialect is not None
                    outcome.usage = dialect.native_events(events, outcome.usage)
                elif b'"usage"' in events:
                    keep = call.wants_usage or translator is not None
                    events = take_usage(events, outcome, keep=keep)
                outcome.delivered += events.count(b'"delta"')
                done = events.endswith(DONE)
                if translator is not None:
                    events = translate_events(events, translator)
                if dialect is not None and dialect.ready:
                    await dialect.finishing()
                if outcome.first_byte_at is None:
                    outcome.first_byte_at = perf_counter()
                await send({"type": "http.response.body", "body": events, "more_body": True})
                if done:
                    # The client has it all and may hang up now; whatever the upstream still
                    # sends (a worker's closing bytes) is not worth waiting for.
                    break
                if deadline is not None and perf_counter() > deadline:
                    raise TimeoutError  # the model's total time is up
            tail = splitter.rest()
            if translator is not None and not done:
                # The upstream ended without [DONE]: the client's answer still gets its end.
                tail = translate_events((tail + b"\n\n" if tail else b"") + DONE, translator)
                if dialect is not None and dialect.ready:
                    await dialect.finishing()
        except (TimeoutError, aiohttp.ClientError) as exc:
            error: HepAIError = (
                UpstreamTimeout("the upstream stopped sending")
                if isinstance(exc, TimeoutError)
                else UpstreamError(f"the upstream stream broke: {exc.__class__.__name__}")
            )
            outcome.status, outcome.error = error.status, error.message
            outcome.cut = True
            if translator is not None:
                tail = translator.fail(error)
            elif outcome.native and dialect is not None:
                tail = dialect.native_error(error)
            else:
                tail = error_event(error)
        await send({"type": "http.response.body", "body": tail, "more_body": False})


def is_event_stream(response: aiohttp.ClientResponse, deployment: Deployment | None) -> bool:
    """Upstreams label SSE; DDF workers stream generators as application/octet-stream."""
    if "event-stream" in response.content_type:
        return True
    return (
        deployment is not None
        and deployment.worker_id is not None
        and (response.content_type != "application/json")
    )


def raise_for_upstream(status: int, raw: bytes, outcome: Outcome) -> None:
    """Turn an upstream failure into ours; a 4xx about the request itself passes through."""
    provider = outcome.deployment.provider if outcome.deployment else "the upstream"
    if status in (401, 403):
        raise UpstreamError(f"{provider} rejected the gateway's credentials ({status})")
    if status == 429:
        raise RateLimited(f"{provider} is rate limiting: {upstream_message(raw)}")
    if not 400 <= status < 500:
        raise UpstreamError(f"{provider} answered {status}: {upstream_message(raw)}")


def upstream_message(raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:300]
    return raw[:200].decode("utf-8", "replace")


def finish_json(call: Call, raw: bytes, *, native: bool = False) -> tuple[bytes, Usage]:
    """The upstream's JSON answer with our model id (in the client's API), and the usage it
    reports."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw, Usage()
    if not isinstance(body, dict):
        return raw, Usage()
    usage = Usage.from_block(body.get("usage"))
    if call.dialect is not None:
        if not native:
            return call.dialect.answer(body, call.model.id), usage
        raw = rewrite_model(raw, orjson.dumps(call.model.id))
        body["model"] = call.model.id
        call.dialect.native_answer(body)
        return raw, usage
    if call.wants_base64:
        body["model"] = call.model.id
        encode_embeddings(body)
        return orjson.dumps(body), usage
    return rewrite_model(raw, orjson.dumps(call.model.id)), usage


_USAGE_KEY = b'"usage"'
#: What follows the key in the chunks that carry no usage (OpenAI's ``"usage":null``).
_NO_USAGE = re.compile(rb"\s*:\s*null")


def take_usage(events: bytes, outcome: Outcome, *, keep: bool) -> bytes:
    """Read the usage chunk among ``events``; drop it when only the gateway asked for it.

    Only an event whose ``"usage"`` is not null is cut out and parsed: OpenAI sends
    ``"usage":null`` in every chunk before the one that counts.
    """
    at = events.find(_USAGE_KEY)
    while at >= 0:
        if _NO_USAGE.match(events, at + len(_USAGE_KEY)):
            at = events.find(_USAGE_KEY, at + len(_USAGE_KEY))
            continue
        start, end = event_bounds(events, at)
        try:
            chunk = orjson.loads(event_data(events[start:end]) or b"")
        except orjson.JSONDecodeError:
            chunk = None
        if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
            outcome.usage = Usage.from_block(chunk["usage"])
            if not keep and not chunk.get("choices"):
                events = events[:start] + events[end:]
                at = events.find(_USAGE_KEY, start)
                continue
        at = events.find(_USAGE_KEY, end)
    return events


def translate_events(events: bytes, translator: Translator) -> bytes:
    """Chat completion events in the client's API; [DONE] closes its answer."""
    out = []
    for event in events.split(b"\n\n"):
        data = event[6:] if event.startswith(b"data: ") else event_data(event)
        if not data:
            continue
        if data.startswith(b"[DONE]"):
            out.append(translator.close())
            continue
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(chunk, dict):
            out.append(translator.feed(chunk))
    return b"".join(out)


def encode_embeddings(body: dict[str, Any]) -> None:
    """Float vectors to base64 of little-endian float32, as OpenAI's encoding_format=base64."""
    for item in body.get("data") or ():
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vector, list):
            packed = array("f", vector)
            if sys.byteorder == "big":
                packed.byteswap()
            item["embedding"] = base64.b64encode(packed.tobytes()).decode("ascii")
