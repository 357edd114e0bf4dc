"""The Responses API's routes besides ``POST /responses`` (gateway/responses.py): a stored
response, its input items, deleting and cancelling it; each the caller's own only."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import aiohttp
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.errors import InvalidRequest
from hepai_server.gateway.runtime import Gateway
from hepai_server.routes.http import authenticate, json_response
from hepai_server.services import responses as store

log = logging.getLogger(__name__)


async def retrieve_response(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    response_id, now = request.path_params["response_id"], datetime.now(UTC)
    if request.query_params.get("stream") == "true":
        raise InvalidRequest("a finished response cannot be streamed again", param="stream")
    row = await gateway.transact(
        lambda s: store.find_response(s, user_id=caller.user_id, response_id=response_id, now=now)
    )
    return json_response(row.response)


async def list_input_items(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    response_id, now = request.path_params["response_id"], datetime.now(UTC)
    query = request.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be asc or desc", param="order")
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise InvalidRequest("'limit' must be an integer from 1 to 100", param="limit")
    row = await gateway.transact(
        lambda s: store.find_response(s, user_id=caller.user_id, response_id=response_id, now=now)
    )
    return json_response(
        store.input_item_page(row, limit=limit, order=order, after=query.get("after"))
    )


async def delete_response(request: Request) -> Response:
    """Delete the caller's response here, and at the provider that answered it natively."""
    gateway, caller = await authenticate(request)
    response_id, now = request.path_params["response_id"], datetime.now(UTC)
    row = await gateway.transact(
        lambda s: store.find_response(s, user_id=caller.user_id, response_id=response_id, now=now)
    )
    provider, model = row.provider, row.model
    await gateway.transact(
        lambda s: store.delete_response(s, user_id=caller.user_id, response_id=response_id, now=now)
    )
    if provider is not None:
        await forget_upstream(gateway, model, provider, response_id)
    return json_response({"id": response_id, "object": "response", "deleted": True})


async def cancel_response(request: Request) -> Response:
    """Only background responses can be cancelled, and every response here runs in the
    foreground (a stream is cancelled by closing it): OpenAI's answer for those."""
    gateway, caller = await authenticate(request)
    response_id, now = request.path_params["response_id"], datetime.now(UTC)
    await gateway.transact(
        lambda s: store.find_response(s, user_id=caller.user_id, response_id=response_id, now=now)
    )
    raise InvalidRequest(
        "Only responses created with background=true can be cancelled", param="response_id"
    )


async def forget_upstream(gateway: Gateway, model: str, provider: str, response_id: str) -> None:
    """Ask the provider that answered a response natively to delete its copy (best effort: it
    expires there too)."""
    deployment = next(
        (
            d
            for m in gateway.catalog.models()
            if m.id == model
            for d in m.deployments
            if d.provider == provider and d.responses_url
        ),
        None,
    )
    if deployment is None or deployment.responses_url is None:
        return
    url = f"{deployment.responses_url}/{response_id}"
    try:
        async with gateway.session.delete(url, headers=deployment.headers) as answer:
            if answer.status >= 400:
                log.info("%s kept response %s (%d)", provider, response_id, answer.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.info("%s could not be asked to delete %s: %s", provider, response_id, exc)
