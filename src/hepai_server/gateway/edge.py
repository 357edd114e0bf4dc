"""The edge: the middleware every HTTP request passes first.

It serves ``/path/`` as ``/path`` (the hepai client and some tools add the slash), gives the
request its id (the client's sane ``X-Request-ID``, else a fresh one) for the log lines it causes
and the ``x-request-id`` header of its answer, and while the process drains makes every answer
close its connection, so a load balancer's pooled connections leave with it.
"""

from __future__ import annotations

from typing import Any

from hepai_server.gateway.asgi import (
    REQUEST_ID_KEY,
    Message,
    Receive,
    Scope,
    Send,
    client_request_id,
)
from hepai_server.telemetry.logs import REQUEST_ID

CLOSE = (b"connection", b"close")


class Edge:
    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope["path"] = path.rstrip("/") or "/"
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value
                break
        request_id = client_request_id(given)
        scope[REQUEST_ID_KEY] = request_id
        stamp = (b"x-request-id", request_id.encode())
        gateway = scope.get("state", {}).get("gateway")
        draining = gateway is not None and gateway.health.draining

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                if not any(name == b"x-request-id" for name, _ in headers):
                    headers.append(stamp)
                if draining:
                    headers.append(CLOSE)
                message["headers"] = headers
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, stamped)
        finally:
            REQUEST_ID.reset(token)
