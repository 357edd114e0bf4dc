"""The Batch API's routes: create, retrieve, list and cancel batches. Thin: the work is
gateway/batches.py's."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from hepai_server.errors import InvalidRequest
from hepai_server.gateway.batches import PAGE_LIMIT
from hepai_server.routes.http import authenticate, json_body, json_response


async def create_batch(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    return json_response(await gateway.batches.create(caller, await json_body(request)))


async def retrieve_batch(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    return json_response(await gateway.batches.get(caller, request.path_params["batch_id"]))


async def cancel_batch(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    return json_response(await gateway.batches.cancel(caller, request.path_params["batch_id"]))


async def list_batches(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    query = request.query_params
    limit = query.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= PAGE_LIMIT:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {PAGE_LIMIT}", param="limit")
    batches, has_more = await gateway.batches.page(
        caller, after=query.get("after") or None, limit=int(limit)
    )
    return json_response(
        {
            "object": "list",
            "data": batches,
            "first_id": batches[0]["id"] if batches else None,
            "last_id": batches[-1]["id"] if batches else None,
            "has_more": has_more,
        }
    )
