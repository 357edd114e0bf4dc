"""What the Starlette routes of the API share: who is calling, the JSON in, the JSON out."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.errors import InvalidRequest
from hepai_server.gateway.auth import token_from_headers
from hepai_server.gateway.runtime import Gateway
from hepai_server.services.accounts import Caller


async def authenticate(request: Request) -> tuple[Gateway, Caller]:
    gateway: Gateway = request.state.gateway
    token = token_from_headers(dict(request.scope["headers"]))
    return gateway, await gateway.auth.authenticate(token)


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is an empty object."""
    raw = await request.body()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def json_response(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")
