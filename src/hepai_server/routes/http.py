"""What the Starlette routes of the API share: who is calling, the JSON in, the JSON out."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.errors import InvalidRequest, PermissionDenied
from hepai_server.gateway.asgi import parse_content_length, read_body
from hepai_server.gateway.auth import token_from_headers
from hepai_server.gateway.runtime import Gateway
from hepai_server.services.accounts import FULL, Caller


async def authenticate(request: Request, *, full: bool = False) -> tuple[Gateway, Caller]:
    """Who calls, by API key; with ``full``, only a key of full scope (the account routes and
    registering workers are not for inference-only keys)."""
    gateway: Gateway = request.state.gateway
    token = token_from_headers(dict(request.scope["headers"]))
    caller = await gateway.auth.authenticate(token)
    if full and caller.scope != FULL:
        raise PermissionDenied(
            "this API key is for inference only (models, tools and files); manage accounts "
            "and register workers with a key of full access"
        )
    return gateway, caller


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is an empty object; 413 past the limit."""
    gateway: Gateway = request.state.gateway
    declared = parse_content_length(request.headers.get("content-length", "").encode() or None)
    raw = await read_body(
        request.receive, declared=declared, limit=gateway.settings.api_max_body_bytes
    )
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def json_response(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")
