"""The frame every relaying endpoint runs in: the request id, who calls, errors and
disconnects, and exactly one usage row, whoever answers (a provider, a worker, or the frame
itself with an error).

A relaying endpoint is a ``Frame`` around a ``Handler``: the frame authenticates (by API key,
or for the portal's playground by the browser's session), hands the handler an ``Exchange``,
and whatever happens records the exchange's usage row. The handler reads the request, fills in
``exchange.model`` and the ``outcome`` as it goes, and answers; an error it raises before the
answer began is sent here as OpenAI's error body with its status.

When the call is admitted (``Exchange.admit``: the budgets and rate limits that apply reserve
room for it) its start is journaled, so its row survives even the process; when it ends, its
row is built (costed at the prices in force), journaled and queued, and its reservation
settled with what it used. An admitted call's answer carries the ``x-ratelimit-*`` headers.

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
from hepai_server.errors import DatabaseUnavailable, HepAIError, ServiceUnavailable
from hepai_server.gateway.asgi import (
    REQUEST_ID_KEY,
    ClientDisconnected,
    Message,
    Receive,
    Scope,
    Send,
    client_request_id,
    new_request_id,
    send_error,
)
from hepai_server.gateway.auth import token_from_headers
from hepai_server.gateway.ledger import Start, UsageRow
from hepai_server.gateway.limiter import Ticket
from hepai_server.gateway.proxy import CLIENT_CLOSED, Outcome
from hepai_server.gateway.runtime import Gateway
from hepai_server.gateway.usage import MAX_PENDING
from hepai_server.protocol.openai import Usage
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
    client_request_id: str | None = None
    model: str = ""
    stream: bool = False
    outcome: Outcome = field(default_factory=Outcome)
    #: The prompt's tokens, estimated from its size: the row's when the answer is cut.
    prompt_estimate: int = 0
    ticket: Ticket | None = None
    #: The journal segment of the call's start, once it was admitted.
    started_in: int | None = None
    #: False for a request that is no call (an MCP client's handshake or tool listing): it
    #: gets no row unless it was admitted after all.
    recorded: bool = True

    async def admit(
        self, caller: Caller, *, prompt: int, output: int, embedding: bool, pages: int = 0
    ) -> None:
        """Reserve room for the call in every budget and rate limit that applies (or raise the
        429), and journal its start: from here on it has a row whatever happens. ``pages`` is
        what a document tool's call is assumed to convert, for a price per page."""
        gateway = self.gateway
        self.prompt_estimate = prompt
        limiter = gateway.limiter
        prices = limiter.prices
        estimate = Usage(prompt_tokens=prompt, completion_tokens=output, pages=pages or None)
        cost = prices.cost(self.model, estimate, embedding=embedding)
        if limiter.active:
            self.ticket = await limiter.admit(
                caller, self.model, request_id=self.request_id, tokens=prompt + output, cost=cost
            )
        self.started_in = gateway.recorder.journal.started(
            Start(
                self.request_id,
                caller.user_id,
                caller.key_id,
                self.endpoint,
                self.model[:256],
                self.stream,
                prompt,
                prices.cost(self.model, Usage(prompt_tokens=prompt), embedding=embedding),
                self._budgets(),
                self.client_request_id,
                time.time(),
            )
        )

    def finish(self, caller: Caller | None) -> UsageRow:
        """The call is over: its row recorded (when someone was let in, and it is a call),
        its reservation settled with what it used, its metrics counted."""
        gateway = self.gateway
        row = self.usage_row(caller)
        if caller is not None and (self.recorded or self.started_in is not None):
            gateway.recorder.record(row, self.started_in)
            if self.ticket is not None:
                gateway.limiter.settle(
                    self.ticket, self.request_id, tokens=row.total_tokens or 0, cost=row.cost_nanos
                )
        gateway.meter.add(row)
        return row

    def ended(self, caller: Caller, row: UsageRow) -> None:
        """The call is over and its row ``row`` (``usage_row``) is not the usage writer's to
        write: whoever ran the call writes it in a transaction of its own (a batch line's,
        with its answer). Its start is ended in the journal, its reservation settled, its
        metrics counted; the journal's copy of the row is harmless, since the ledger is
        unique by request id."""
        gateway = self.gateway
        gateway.recorder.journal.ended(row, self.started_in)
        if self.ticket is not None:
            gateway.limiter.settle(
                self.ticket, self.request_id, tokens=row.total_tokens or 0, cost=row.cost_nanos
            )
        gateway.meter.add(row)

    def _budgets(self) -> str | None:
        if self.ticket is None or not self.ticket.plan.budget_ids:
            return None
        return ",".join(map(str, self.ticket.plan.budget_ids))

    def usage_row(self, caller: Caller | None) -> UsageRow:
        """The one usage row of this request: every relaying endpoint's, built here (for the
        metrics alone when no caller was let in)."""
        outcome = self.outcome
        usage = outcome.final_usage(self.prompt_estimate)
        ttft = outcome.first_byte_at
        error = outcome.error
        cost = self.gateway.limiter.prices.cost(
            outcome.fallback or self.model,
            usage,
            embedding=self.endpoint == "embeddings",
            succeeded=outcome.status < 400,
        )
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
            cost,
            self._budgets(),
            self.client_request_id,
            outcome.fallback,
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
            scope.get(REQUEST_ID_KEY) or new_request_id(),
            started,
            headers,
            self.handler.name,
            client_request_id(headers.get(b"x-request-id")),
        )
        caller: Caller | None = None
        if gateway.recorder.pending > MAX_PENDING:
            await send_error(send, LEDGER_BEHIND, request_id=exchange.request_id)
            return
        if gateway.limiter.active or exchange.client_request_id is not None:
            send = answer_headers(exchange, send)
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
            row = exchange.finish(caller)
            if gateway.tracing is not None:
                trace(gateway.tracing, row, exchange.headers.get(b"traceparent"))


#: Answered while the usage writer is that far behind (the database is away): a request must
#: not run unless its row can be kept.
LEDGER_BEHIND = ServiceUnavailable(
    "the platform cannot record usage right now; try again shortly",
    headers={"retry-after": "5"},
)


def answer_headers(exchange: Exchange, send: Send) -> Send:
    """``send``, adding to the answer's headers the admitted call's x-ratelimit-* headers and
    the client's own request id (as x-client-request-id)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            extra = []
            if exchange.ticket is not None:
                extra += [(k.encode(), v.encode()) for k, v in exchange.ticket.headers.items()]
            if exchange.client_request_id is not None:
                extra.append((b"x-client-request-id", exchange.client_request_id.encode()))
            if extra:
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return sending


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
