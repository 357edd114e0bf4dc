"""The OpenAI-compatible routes besides the relays (``gateway.relay``): /models and
Anthropic's count_tokens."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hepai_server.errors import ModelNotFound
from hepai_server.gateway import registry
from hepai_server.gateway.asgi import parse_json_object
from hepai_server.gateway.runtime import Gateway
from hepai_server.protocol.anthropic import estimate_tokens
from hepai_server.protocol.openai import check_model_id
from hepai_server.routes.http import authenticate, json_response
from hepai_server.services.accounts import Caller


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
