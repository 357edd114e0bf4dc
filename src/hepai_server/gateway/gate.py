"""The unified gate: call a method of a worker-hosted model, as the hepai SDK does.

``POST /worker/unified_gate/?model=M&function=F`` with ``{"args": [...], "kwargs": {...}}``
goes through the dispatcher to a live worker of M that the caller may use. The body is spooled
(to disk past a few megabytes), so a 200 MB base64 PDF neither sits in memory nor blocks a
retry on the next worker. The worker's answer comes back as it is: status, JSON body and
content type; a streamed answer is relayed chunk by chunk as text/event-stream.
"""

from __future__ import annotations

import tempfile
from urllib.parse import parse_qs

from hepai_server.errors import InvalidRequest
from hepai_server.gateway.asgi import (
    Receive,
    Scope,
    Send,
    body_chunks,
    parse_content_length,
    refuse_declared,
)
from hepai_server.gateway.frame import Exchange
from hepai_server.gateway.multipart import is_multipart, multipart_to_json
from hepai_server.protocol.openai import Usage
from hepai_server.services.accounts import Caller

#: Bodies up to this size stay in memory while they are forwarded; larger ones go to disk.
SPOOL_IN_MEMORY = 4 * 1024 * 1024


class GateCall:
    """The handler behind /worker/unified_gate and /worker_unified_gate, in its frame."""

    name = "worker.__call__"

    async def __call__(
        self, exchange: Exchange, caller: Caller, scope: Scope, receive: Receive, send: Send
    ) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        model = (query.get("model") or [""])[0]
        function = (query.get("function") or ["__call__"])[0]
        exchange.endpoint, exchange.model = f"worker.{function}"[:32], model
        if not model:
            raise InvalidRequest("the 'model' query parameter is required", param="model")
        gateway = exchange.gateway
        routes = await gateway.dispatcher.routes(caller, model)
        pages = gateway.settings.tool_pages_estimate
        await exchange.admit(caller, prompt=0, output=0, embedding=False, pages=pages)
        limit = gateway.settings.gate_max_body_bytes
        headers = exchange.headers
        refuse_declared(parse_content_length(headers.get(b"content-length")), limit)
        with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as body:
            if is_multipart(headers.get(b"content-type", b"")):
                await multipart_to_json(scope, receive, body, limit=limit)
            else:
                async for chunk in body_chunks(receive, limit=limit):
                    body.write(chunk)
            answer = await gateway.dispatcher.call(
                caller,
                routes,
                model=model,
                function=function,
                body=body,
                request_id=exchange.request_id,
            )
        outcome = exchange.outcome
        outcome.served_by, outcome.status = answer.worker_id, answer.response.status
        try:
            await gateway.dispatcher.relay(answer, exchange.request_id, receive, send)
        finally:
            answer.response.release()
        outcome.usage = Usage.from_tool_header(answer.response.headers.get("x-hepai-usage"))
