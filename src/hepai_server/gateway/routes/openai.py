"""The OpenAI-compatible routes: /models, /chat/completions, /completions, /embeddings, /rerank.

The POST routes are raw ASGI endpoints: they are the hot path, and each step is a plain call.
"""

from __future__ import annotations

import time
from time import perf_counter
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hepai_server.accounts import Caller
from hepai_server.errors import HepAIError, InvalidRequest, ModelNotFound
from hepai_server.gateway import registry
from hepai_server.gateway.asgi import (
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    client_request_id,
    parse_content_length,
    parse_json_object,
    read_body,
    send_error,
)
from hepai_server.gateway.auth import token_from_headers
from hepai_server.gateway.gate import worker_model
from hepai_server.gateway.proxy import Call
from hepai_server.gateway.routes.http import authenticate, json_response
from hepai_server.gateway.runtime import Gateway
from hepai_server.protocol.anthropic import estimate_tokens, messages_to_chat
from hepai_server.protocol.openai import Endpoint, Usage, check_model_id, check_request


class RelayEndpoint:
    """POST one OpenAI endpoint: authenticate, read and check the body, relay to an upstream.

    With ``anthropic`` it serves Anthropic Messages instead: the request is translated into a
    chat completion on the way in and the answer back into a Message on the way out.
    """

    def __init__(self, endpoint: Endpoint, *, anthropic: bool = False) -> None:
        self.endpoint = endpoint
        self.anthropic = anthropic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        gateway: Gateway = scope["state"]["gateway"]
        headers = dict(scope["headers"])
        request_id = client_request_id(headers.get(b"x-request-id"))
        caller: Caller | None = None
        model_id = ""
        try:
            caller = await self.authenticate(scope, headers)
            raw = await read_body(
                receive,
                declared=parse_content_length(headers.get(b"content-length")),
                limit=gateway.settings.max_body_bytes,
            )
            body = parse_json_object(raw)
            messages_body = body if self.anthropic else None
            if messages_body is not None:
                body = messages_to_chat(messages_body)
            model_id = check_request(self.endpoint, body)
            if model_id in gateway.catalog.ids():
                model = gateway.catalog.resolve(model_id, caller)
            else:
                model = await worker_model(gateway, caller, model_id, self.endpoint, request_id)
            if model.type not in self.endpoint.model_types:
                raise InvalidRequest(
                    f"'{model.id}' is a {model.type} model; it cannot serve {self.endpoint.path}",
                    param="model",
                )
        except ClientDisconnected:
            return
        except HepAIError as error:
            if caller is not None:
                record_refusal(gateway, caller, self.endpoint, model_id, error, started, request_id)
            await send_error(send, error, request_id=request_id)
            return
        call = Call.create(
            request_id=request_id,
            caller=caller,
            endpoint=self.endpoint,
            model=model,
            body=body,
            started=started,
            messages_body=messages_body,
        )
        try:
            await gateway.proxy.relay(call, receive, send)
        except HepAIError as error:
            await send_error(send, error, request_id=request_id)

    async def authenticate(self, scope: Scope, headers: dict[bytes, bytes]) -> Caller:
        """Who calls: the API key's owner (the portal's playground asks the session instead)."""
        gateway: Gateway = scope["state"]["gateway"]
        return await gateway.auth.authenticate(token_from_headers(headers))


def record_refusal(
    gateway: Gateway,
    caller: Caller,
    endpoint: Endpoint,
    model_id: str,
    error: HepAIError,
    started: float,
    request_id: str,
) -> None:
    """A usage row for an authenticated request refused before it reached an upstream."""
    gateway.recorder.record(
        request_id=request_id,
        user_id=caller.user_id,
        api_key_id=caller.key_id,
        endpoint=endpoint.name,
        model=model_id[:256],
        deployment=None,
        stream=False,
        status_code=error.status,
        usage=Usage(),
        latency_ms=(perf_counter() - started) * 1000,
        error=error.message,
    )


async def list_models(request: Request) -> Response:
    """The models this key may call: the providers' and the live workers'."""
    gateway, caller = await authenticate(request)
    cards = [model.card() for model in gateway.catalog.visible_to(caller)]
    cards += await worker_cards(gateway, caller)
    return json_response({"object": "list", "data": cards})


async def retrieve_model(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    model_id = request.path_params["model_id"]
    if model_id in gateway.catalog.ids():
        return json_response(gateway.catalog.resolve(model_id, caller).card())
    for card in await worker_cards(gateway, caller):
        if card["id"] == model_id:
            return json_response(card)
    raise ModelNotFound(model_id)


async def worker_cards(gateway: Gateway, caller: Caller) -> list[dict[str, Any]]:
    expiry = gateway.settings.worker_expiry_seconds
    return await gateway.transact(
        lambda s: registry.model_cards(s, caller=caller, now=time.time(), expiry=expiry)
    )


async def count_tokens(request: Request) -> Response:
    """Anthropic's count_tokens for a model the caller may call: an estimate, since no
    tokenizer of the upstream's is at hand."""
    gateway, caller = await authenticate(request)
    body = parse_json_object(await request.body())
    model_id = check_model_id(body.get("model"))
    if model_id in gateway.catalog.ids():
        gateway.catalog.resolve(model_id, caller)
    elif not any(card["id"] == model_id for card in await worker_cards(gateway, caller)):
        raise ModelNotFound(model_id)
    return json_response({"input_tokens": estimate_tokens(body)})
