"""Audio and images: transcription, translation, speech, image generation and edits, relayed in
their frame like chat (the same permissions, admission and usage row) to the providers (and, for
the JSON endpoints, workers) whose models of type ``audio``, ``tts`` or ``image`` serve them.

Uploads (audio to transcribe, images to edit) are streamed to the upstream as they arrive
(gateway/form.py); answers come back as they are: JSON with our model id, and text, subtitles,
audio bytes or events chunk by chunk as the upstream sends them. Usage is whatever the upstream
reports (tokens, for the models that count them); a price ``per_call`` prices the rest.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

import aiohttp
import orjson

from hepai_server.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from hepai_server.gateway.asgi import (
    DisconnectWatch,
    Receive,
    Scope,
    Send,
    parse_content_length,
    parse_json_object,
    read_body,
    refuse_declared,
    send_bytes,
)
from hepai_server.gateway.catalog import Deployment, Model
from hepai_server.gateway.form import FormStream
from hepai_server.gateway.frame import Exchange
from hepai_server.gateway.proxy import (
    CLIENT_CLOSED,
    Outcome,
    Payload,
    raise_for_upstream,
    upstream_message,
)
from hepai_server.gateway.relay import resolve_model
from hepai_server.protocol.openai import (
    IMAGE_GENERATIONS,
    SPEECH,
    Endpoint,
    Usage,
    check_model_id,
)
from hepai_server.protocol.sse import EventSplitter, error_event, event_data, split_events
from hepai_server.services.accounts import Caller

#: What a JSON request must carry besides the model, by endpoint.
REQUIRED = {SPEECH: ("input", "voice"), IMAGE_GENERATIONS: ("prompt",)}


class MediaRelay:
    """The handler of one audio or image endpoint: a JSON request (speech, image generation)
    or a multipart upload (transcription, translation, image edits)."""

    __slots__ = ("endpoint", "multipart", "name")

    def __init__(self, endpoint: Endpoint, *, multipart: bool) -> None:
        self.endpoint = endpoint
        self.multipart = multipart
        self.name = endpoint.name

    async def __call__(
        self, exchange: Exchange, caller: Caller, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if self.multipart:
            await self._form(exchange, caller, receive, send)
        else:
            await self._json(exchange, caller, receive, send)

    async def _json(self, exchange: Exchange, caller: Caller, receive: Receive, send: Send) -> None:
        gateway = exchange.gateway
        raw = await read_body(
            receive,
            declared=parse_content_length(exchange.headers.get(b"content-length")),
            limit=gateway.settings.max_body_bytes,
        )
        body = parse_json_object(raw)
        exchange.model = model_id = check_model_id(body.get("model"))
        for name in REQUIRED.get(self.endpoint, ()):
            if not isinstance(body.get(name), str) or not body[name]:
                raise InvalidRequest(f"'{name}' is required", param=name)
        model = await resolve_model(gateway, caller, model_id, self.endpoint, exchange.request_id)
        exchange.stream = body.get("stream") is True or body.get("stream_format") == "sse"
        await exchange.admit(caller, prompt=len(raw) // 4 + 1, output=0, embedding=False)

        def build(deployment: Deployment) -> tuple[str, Payload, dict[str, str]]:
            sent = {**body, "model": deployment.upstream_model}
            payload = orjson.dumps({"kwargs": sent} if deployment.worker_id else sent)
            return deployment.url(self.endpoint), payload, deployment.headers

        outcome = exchange.outcome
        response = await gateway.upstreams.attempt(model, outcome, build)
        await relay_answer(response, model, outcome, exchange.request_id, receive, send)

    async def _form(self, exchange: Exchange, caller: Caller, receive: Receive, send: Send) -> None:
        gateway = exchange.gateway
        limit = gateway.settings.media_max_body_bytes
        refuse_declared(parse_content_length(exchange.headers.get(b"content-length")), limit)
        form = FormStream(exchange.headers.get(b"content-type", b""), receive, limit=limit)
        try:
            exchange.model = model_id = check_model_id(await form.read_until_model())
            model = await resolve_model(
                gateway, caller, model_id, self.endpoint, exchange.request_id
            )
            if any(deployment.worker_id for deployment in model.deployments):
                raise InvalidRequest(
                    f"'{model_id}' is served by workers, which take files through the "
                    "unified gate (as base64 or a file id), not as a form",
                    param="model",
                )
            exchange.stream = form.fields.get("stream") == "true"
            prompt = len(form.fields.get("prompt", "")) // 4 + 1
            await exchange.admit(caller, prompt=prompt, output=0, embedding=False)

            def build(deployment: Deployment) -> tuple[str, Payload, dict[str, str]]:
                headers = {**deployment.headers, "content-type": form.content_type}
                return (
                    deployment.url(self.endpoint),
                    form.body(deployment.upstream_model),
                    headers,
                )

            outcome = exchange.outcome
            response = await gateway.upstreams.attempt(
                model, outcome, build, again=lambda: form.replayable
            )
            await relay_answer(response, model, outcome, exchange.request_id, receive, send)
        finally:
            # Fields after the model (``stream`` among them) are known once the form has gone.
            exchange.stream = form.fields.get("stream") == "true"
            form.close()


async def relay_answer(
    response: aiohttp.ClientResponse,
    model: Model,
    outcome: Outcome,
    request_id: str,
    receive: Receive,
    send: Send,
) -> None:
    """The upstream's answer to the client: an error or JSON whole (with our model id, its
    usage read), anything else (text, subtitles, audio, events) chunk by chunk; a client that
    goes away ends the upstream call at once."""
    finished = False
    try:
        content_type = response.headers.get("content-type", "application/octet-stream")
        if response.status >= 400 or content_type.startswith("application/json"):
            raw = await response.read()
            if response.status >= 400:
                raise_for_upstream(response.status, raw, outcome)
                outcome.status, outcome.error = response.status, upstream_message(raw)
            else:
                raw, outcome.usage = json_answer(raw, model.id)
            await send_bytes(
                send,
                response.status,
                raw,
                request_id=request_id,
                content_type=content_type.encode(),
            )
        else:
            async with DisconnectWatch(receive) as watch:
                try:
                    await stream_answer(
                        response, outcome, content_type, request_id, watch.guard(send)
                    )
                except asyncio.CancelledError:
                    if not watch.fired:
                        raise
                    watch.withdraw()
                    outcome.fail(CLIENT_CLOSED, "client closed the connection")
                    outcome.cut = True
                    return
        finished = True
    finally:
        response.release() if finished else response.close()


def json_answer(raw: bytes, model_id: str) -> tuple[bytes, Usage]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw, Usage()
    if not isinstance(body, dict):
        return raw, Usage()
    if "model" in body:
        body["model"] = model_id
        raw = orjson.dumps(body)
    return raw, Usage.from_block(body.get("usage"))


async def stream_answer(
    response: aiohttp.ClientResponse,
    outcome: Outcome,
    content_type: str,
    request_id: str,
    send: Send,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    events = EventSplitter() if "event-stream" in content_type else None
    tail = b""
    try:
        async for chunk in response.content.iter_any():
            if outcome.first_byte_at is None:
                outcome.first_byte_at = perf_counter()
            if events is not None and b'"usage"' in (complete := events.feed(chunk)):
                read_event_usage(complete, outcome)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (TimeoutError, aiohttp.ClientError) as exc:
        error = (
            UpstreamTimeout("the upstream stopped sending")
            if isinstance(exc, TimeoutError)
            else UpstreamError(f"the upstream stream broke: {exc.__class__.__name__}")
        )
        outcome.status, outcome.error, outcome.cut = error.status, error.message, True
        tail = error_event(error) if events is not None else b""
    await send({"type": "http.response.body", "body": tail, "more_body": False})


def read_event_usage(events: bytes, outcome: Outcome) -> None:
    """The usage an event of a transcription or image stream reports (its last event's)."""
    for event in split_events(events):
        if b'"usage"' not in event:
            continue
        try:
            data: Any = orjson.loads(event_data(event) or b"")
        except orjson.JSONDecodeError:
            continue
        if isinstance(data, dict) and isinstance(data.get("usage"), dict):
            outcome.usage = Usage.from_block(data["usage"])
