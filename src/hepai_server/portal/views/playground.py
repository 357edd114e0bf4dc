"""The playground: try a model from the browser, signed in, with no API key in the page.

The page's script calls ``/playground/v1/...``: the same relay and unified gate as the API,
with the caller taken from the session instead of a key. Those calls need the session's CSRF
token in the ``X-CSRF-Token`` header and are recorded in usage like any other.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import Response

from hepai_server.errors import AuthenticationFailed, PermissionDenied
from hepai_server.gateway.asgi import Scope
from hepai_server.gateway.frame import Frame
from hepai_server.gateway.gate import GateCall
from hepai_server.gateway.relay import OpenAIRelay
from hepai_server.portal.snippets import Snippet
from hepai_server.portal.views.models import available_models
from hepai_server.portal.web import Portal, SignInRequired, check_origin, gateway
from hepai_server.protocol.openai import Endpoint
from hepai_server.services.accounts import Caller

CSRF_HEADER = "x-csrf-token"


async def by_session(scope: Scope, headers: dict[bytes, bytes]) -> Caller:
    """The signed-in user, for a playground call that carries its session's CSRF header."""
    request = Request(scope)
    portal: Portal = scope["state"]["portal"]
    try:
        viewer = await portal.viewer(request)
    except SignInRequired:
        raise AuthenticationFailed("the portal session has ended; sign in again") from None
    check_origin(request)
    sent = request.headers.get(CSRF_HEADER, "")
    if not secrets.compare_digest(sent.encode(), viewer.csrf_token.encode()):
        raise PermissionDenied("the playground page has expired; reload it")
    return viewer.caller()


def playground_relay(endpoint: Endpoint) -> Frame:
    """/chat/completions, /embeddings and /rerank for the playground."""
    return Frame(OpenAIRelay(endpoint), by_session)


def playground_gate() -> Frame:
    """The unified gate for the playground's tools (document → markdown)."""
    return Frame(GateCall(), by_session)


async def playground_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    models = await available_models(gateway(request), viewer.caller())
    by_type: dict[str, list[str]] = {}
    for model in models:
        if model.status != "offline":
            by_type.setdefault(model.type, []).append(model.id)
    return portal.render(
        request,
        "playground.html",
        viewer=viewer,
        models=by_type,
        chosen=request.query_params.get("model", ""),
        # Filled by the page's script with the request it is about to send.
        code_tabs=[Snippet("curl", ""), Snippet("openai", "")],
    )
