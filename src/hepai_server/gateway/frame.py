"""The frame every relaying endpoint runs in: the request id, who calls, errors and
disconnects, and exactly one usage row, whoever answers (a provider, a worker, or the frame
itself with an error).

A relaying endpoint is a ``Frame`` around a ``Handler``: the frame authenticates (by API key,
or for the portal's playground by the browser's session), hands the handler an ``Exchange``,
and whatever happens records the exchange's usage row. The handler reads the request, fills in
``exchange.model`` and the ``outcome`` as it goes, and answers; an error it raises before the
answer began is sent here as OpenAI's error body with its status.

These endpoints are raw ASGI: they are the hot path, and each step is a plain call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Protocol

from hepai_server.db.engine import is_unavailable, unavailable
from hepai_server.errors import DatabaseUnavailable, HepAIError
from hepai_server.gateway.asgi import (
    REQUEST_ID_KEY,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    client_request_id,
    send_error,
)
from hepai_server.gateway.auth import token_from_headers
from hepai_server.gateway.proxy import CLIENT_CLOSED, Outcome
from hepai_server.gateway.runtime import Gateway
from hepai_server.gateway.usage import UsageRow
from hepai_server.services.accounts import Caller
from hepai_server.telemetry.tracing import Tracing

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Exchange:
    """One request in its frame: who asked for what, and how it ended."""

    gateway: Gateway
    request_id: str
    started: float
    headers: dict[bytes, bytes]
    #: How usage rows name the endpoint ("chat.completions", "worker.submit").
    endpoint: str
    model: str = ""
    stream: bool = False
    outcome: Outcome = field(default_factory=Outcome)

    def usage_row(self, caller: Caller | None) -> UsageRow:
        """The one usage row of this request: every relaying endpoint's, built here (for the
        metrics alone when no caller was let in)."""
        outcome = self.outcome
        usage = outcome.final_usage()
        ttft = outcome.first_byte_at
        error = outcome.error
        # Positional: a NamedTuple takes keywords at three times the cost.
        return UsageRow(
            self.request_id,
            caller.user_id if caller is not None else None,
            caller.key_id if caller is not None else None,
            self.endpoint,
            self.model[:256],
            outcome.served_by,
            self.stream,
            outcome.status,
            error[:512] if error else None,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens,
            usage.cached_tokens,
            usage.reasoning_tokens,
            usage.pages,
            usage.bytes,
            usage.estimated,
            (perf_counter() - self.started) * 1000,
            (ttft - self.started) * 1000 if ttft is not None else None,
            time.time(),
        )


class Handler(Protocol):
    """What a relaying endpoint does inside its frame."""

    #: The endpoint's name in usage rows, until the handler knows better.
    name: str

    async def __call__(
        self, exchange: Exchange, caller: Caller, scope: Scope, receive: Receive, send: Send
    ) -> None: ...


#: Who calls, from the request's scope and headers; raises AuthenticationFailed.
Authenticate = Callable[[Scope, dict[bytes, bytes]], Awaitable[Caller]]


async def by_api_key(scope: Scope, headers: dict[bytes, bytes]) -> Caller:
    """The API key's owner, from ``Authorization: Bearer`` or ``x-api-key``."""
    gateway: Gateway = scope["state"]["gateway"]
    return await gateway.auth.authenticate(token_from_headers(headers))


class Frame:
    """A raw ASGI endpoint: ``handler`` inside the request id, authentication, error handling
    and usage recording every relaying endpoint shares."""

    __slots__ = ("authenticate", "handler")

    def __init__(self, handler: Handler, authenticate: Authenticate = by_api_key) -> None:
        self.handler = handler
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        gateway: Gateway = scope["state"]["gateway"]
        headers = dict(scope["headers"])
        exchange = Exchange(
            gateway,
            scope.get(REQUEST_ID_KEY) or client_request_id(headers.get(b"x-request-id")),
            started,
            headers,
            self.handler.name,
        )
        caller: Caller | None = None
        try:
            caller = await self.authenticate(scope, headers)
            await self.handler(exchange, caller, scope, receive, send)
        except ClientDisconnected:
            exchange.outcome.fail(CLIENT_CLOSED, "client closed the connection")
        except HepAIError as error:
            await refuse(exchange, error, send)
        except Exception as exc:
            if not is_unavailable(exc):
                exchange.outcome.fail(500, "internal error")
                raise
            await refuse(exchange, unavailable(exc), send)
        finally:
            row = exchange.usage_row(caller)
            if caller is not None:
                gateway.recorder.record(row)
            gateway.meter.add(row)
            if gateway.tracing is not None:
                trace(gateway.tracing, row, exchange.headers.get(b"traceparent"))


async def refuse(exchange: Exchange, error: HepAIError, send: Send) -> None:
    """Answer with an error raised before the answer began, and note it in the outcome."""
    if isinstance(error, DatabaseUnavailable):
        log.warning("503 on %s: %s", exchange.endpoint, error.message)
        exchange.gateway.metrics.db_unavailable.inc()
    exchange.outcome.fail(error.status, error.message)
    await send_error(send, error, request_id=exchange.request_id)


def trace(tracing: Tracing, row: UsageRow, traceparent: bytes | None) -> None:
    """The request's span, from its usage row."""
    tracing.record(
        name=f"{row.endpoint} {row.model}" if row.deployment else row.endpoint,
        duration=row.latency_ms / 1000,
        attributes={
            "hepai.request_id": row.request_id,
            "hepai.endpoint": row.endpoint,
            "gen_ai.request.model": row.model or None,
            "hepai.deployment": row.deployment,
            "hepai.user_id": row.user_id,
            "hepai.stream": row.stream,
            "http.response.status_code": row.status_code,
            "gen_ai.usage.input_tokens": row.prompt_tokens,
            "gen_ai.usage.output_tokens": row.completion_tokens,
            "hepai.ttft_ms": row.ttft_ms,
            "hepai.error": row.error,
        },
        status=row.status_code,
        traceparent=traceparent,
    )
