"""Relaying one OpenAI request: read and check the body, resolve the model the caller may use
(a provider's, or a worker's through the dispatcher), and hand the call to the proxy.

With ``anthropic`` it serves Anthropic Messages instead: the request is translated into a chat
completion on the way in and the answer back into a Message on the way out. A chat request
with a ``file_search`` tool is grounded in the knowledge bases it names (file_search.py).
"""

from __future__ import annotations

from hepai_server.errors import InvalidRequest
from hepai_server.gateway import file_search
from hepai_server.gateway.asgi import (
    Receive,
    Scope,
    Send,
    parse_content_length,
    parse_json_object,
    read_body,
)
from hepai_server.gateway.catalog import Model
from hepai_server.gateway.dialect import AnthropicDialect
from hepai_server.gateway.frame import Exchange
from hepai_server.gateway.limiter import estimate_tokens
from hepai_server.gateway.proxy import Call
from hepai_server.gateway.runtime import Gateway
from hepai_server.protocol.anthropic import messages_to_chat
from hepai_server.protocol.openai import CHAT, EMBEDDINGS, Endpoint, check_request
from hepai_server.services.accounts import Caller


class OpenAIRelay:
    """The handler of one POST endpoint of the OpenAI API (or Anthropic's Messages)."""

    __slots__ = ("anthropic", "endpoint", "name")

    def __init__(self, endpoint: Endpoint, *, anthropic: bool = False) -> None:
        self.endpoint = endpoint
        self.anthropic = anthropic
        self.name = endpoint.name

    async def __call__(
        self, exchange: Exchange, caller: Caller, scope: Scope, receive: Receive, send: Send
    ) -> None:
        gateway = exchange.gateway
        raw = await read_body(
            receive,
            declared=parse_content_length(exchange.headers.get(b"content-length")),
            limit=gateway.settings.max_body_bytes,
        )
        body = parse_json_object(raw)
        dialect = AnthropicDialect(body) if self.anthropic else None
        if dialect is not None:
            body = messages_to_chat(body)
        exchange.model = model_id = check_request(self.endpoint, body)
        model = await resolve_model(gateway, caller, model_id, self.endpoint, exchange.request_id)
        call = Call.create(
            request_id=exchange.request_id,
            caller=caller,
            endpoint=self.endpoint,
            model=model,
            body=body,
            started=exchange.started,
            dialect=dialect,
        )
        exchange.stream = call.stream
        prompt, output = estimate_tokens(
            self.endpoint, len(raw), body, gateway.settings.default_output_tokens
        )
        searching = self.endpoint is CHAT and dialect is None and "tools" in body
        if searching and (tool := file_search.find_tool(body)) is not None:
            prompt += await file_search.passage_tokens(gateway, caller, tool)
        await exchange.admit(
            caller, prompt=prompt, output=output, embedding=self.endpoint is EMBEDDINGS
        )
        if searching:
            # After admission: a caller the limits refuse gets no searches (nor their rows).
            # The call holds the body, so the sources put into its prompt go upstream.
            sources = await file_search.ground(gateway, caller, body, exchange.request_id)
            if sources is not None:
                send = sources.wrap(send, stream=call.stream)
        await gateway.proxy.relay(call, exchange.outcome, receive, send)


async def resolve_model(
    gateway: Gateway, caller: Caller, model_id: str, endpoint: Endpoint, request_id: str
) -> Model:
    """The model the caller asked for (a provider's, or a worker's through the dispatcher), if
    it may call it and it serves ``endpoint``."""
    if model_id in gateway.catalog.ids():
        model = gateway.catalog.resolve(model_id, caller)
    else:
        model = await gateway.dispatcher.model(caller, model_id, endpoint, request_id)
    if model.type not in endpoint.model_types:
        raise InvalidRequest(
            f"'{model.id}' is a {model.type} model; it cannot serve {endpoint.path}",
            param="model",
        )
    return model
