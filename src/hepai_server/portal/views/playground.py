"""The playground: try a model from the browser, signed in, with no API key in the page.

The page's script calls ``/playground/v1/...``: the same relay and unified gate as the API,
with the caller taken from the session instead of a key. Those calls need the session's CSRF
token in the ``X-CSRF-Token`` header and are recorded in usage like any other.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import Response

from hepai_server.accounts import Caller
from hepai_server.errors import AuthenticationFailed, PermissionDenied
from hepai_server.gateway.asgi import Scope
from hepai_server.gateway.gate import UnifiedGate
from hepai_server.gateway.routes.openai import RelayEndpoint
from hepai_server.portal.views.models import available_models
from hepai_server.portal.web import Portal, SignInRequired, check_origin, gateway

CSRF_HEADER = "x-csrf-token"


class SessionCaller:
    """Authenticates a playground call by the browser's session and its CSRF header."""

    async def authenticate(self, scope: Scope, headers: dict[bytes, bytes]) -> Caller:
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


class PlaygroundRelay(SessionCaller, RelayEndpoint):
    """/chat/completions, /embeddings and /rerank for the playground."""


class PlaygroundGate(SessionCaller, UnifiedGate):
    """The unified gate for the playground's tools (document → markdown)."""


async def playground_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    models = await available_models(gateway(request), viewer.caller())
    by_type: dict[str, list[str]] = {}
    for model in models:
        if model.status != "offline":
            by_type.setdefault(model.type, []).append(model.id)
    return portal.render(request, "playground.html", viewer=viewer, models=by_type)
