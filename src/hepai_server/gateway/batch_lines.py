"""A batch line as a call: run as a live request of its endpoint is (the owner's permissions
for its model, admission against the limits and budgets, the proxy), with no client
connection, and its answer recorded with its usage row in one transaction.

The row is not the usage writer's (``Exchange.ended``): it commits with the line's answer, in
a transaction that does nothing when the line was answered already (by a run that a restart or
a dead replica's takeover cut short), and the ledger is unique by request id, the line's
``<batch id>-<line>``. So a line is answered and billed once, however often it is run.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from hepai_server.db.tables import Batch, BatchLine
from hepai_server.errors import HepAIError
from hepai_server.gateway import file_search
from hepai_server.gateway.asgi import Collected, Send
from hepai_server.gateway.frame import Exchange
from hepai_server.gateway.ledger import UsageRow
from hepai_server.gateway.limiter import estimate_tokens
from hepai_server.gateway.proxy import Call
from hepai_server.gateway.relay import resolve_model
from hepai_server.gateway.responses import run_response
from hepai_server.gateway.runtime import Gateway
from hepai_server.protocol.batches import ENDPOINTS, refusal, request_id
from hepai_server.protocol.openai import CHAT, EMBEDDINGS, check_request
from hepai_server.services.accounts import Caller

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Owed:
    """A line still owed its answer."""

    index: int
    custom_id: str
    body: dict[str, Any]
    model: str


class LineCalls:
    """Answers batch lines, one call each."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def answer(self, batch_id: str, endpoint: str, owner: Caller, line: Owed) -> bool:
        """Call the line's request once; True when it got its answer (recorded), False when
        the limits (or every upstream) refused it for now."""
        gateway = self.gateway
        exchange = Exchange(
            gateway,
            request_id(batch_id, line.index),
            perf_counter(),
            {},
            ENDPOINTS[endpoint],
            batch_id,  # the row's client_request_id: which batch it was taken for
        )
        exchange.model = line.model[:256]
        try:
            # A copy each try: the proxy and file_search change the body they are given.
            request = orjson.loads(orjson.dumps(line.body))
            status, body = await self._call(exchange, owner, endpoint, request)
        except asyncio.CancelledError:
            # The process stops: the line stays owed, and runs again under the same request
            # id, so this attempt writes no row; its reservation is given back.
            if exchange.ticket is not None:
                gateway.limiter.settle(exchange.ticket, exchange.request_id, tokens=0, cost=0)
            raise
        except HepAIError as failure:
            if failure.status == 429 and exchange.started_in is None:
                return False  # refused at admission: no call was made, nothing is billed
            exchange.outcome.fail(failure.status, failure.message)
            status, body = failure.status, failure.to_body()
        except Exception:
            log.exception("batch %s line %d failed", batch_id, line.index)
            exchange.outcome.fail(500, "internal error")
            status, body = 500, {"error": {"message": "internal error", "type": "server_error"}}
        row = exchange.usage_row(owner)
        if status == 429:
            # Every upstream refused it: not an answer for a batch line. The admitted call
            # ends here (its reservation settled) and the line is tried again.
            exchange.ended(owner, row)
            return False
        try:
            await gateway.transact(lambda s: self._record(s, batch_id, line, status, body, row))
        finally:
            exchange.ended(owner, row)
        return True

    async def _call(
        self, exchange: Exchange, owner: Caller, endpoint: str, body: dict[str, Any]
    ) -> tuple[int, Any]:
        """The line's request run as a live one is, with no client connection: its status
        and body."""
        if (refused := refusal(body)) is not None:
            raise refused
        if endpoint == "/v1/responses":
            status, raw = await run_response(exchange, owner, body)
            return status, parse_answer(raw)
        gateway = self.gateway
        kind = EMBEDDINGS if endpoint == "/v1/embeddings" else CHAT
        model_id = check_request(kind, body)
        model = await resolve_model(gateway, owner, model_id, kind, exchange.request_id)
        call = Call.create(
            request_id=exchange.request_id,
            caller=owner,
            endpoint=kind,
            model=model,
            body=body,
            started=exchange.started,
        )
        prompt, output = estimate_tokens(
            kind, len(orjson.dumps(body)), body, gateway.settings.default_output_tokens
        )
        if kind is CHAT and (tool := file_search.find_tool(body)) is not None:
            prompt += await file_search.passage_tokens(gateway, owner, tool)
        await exchange.admit(owner, prompt=prompt, output=output, embedding=kind is EMBEDDINGS)
        answer = Collected()
        send: Send = answer.send
        if kind is CHAT and "tools" in body:
            # Grounded in the owner's knowledge bases as a live chat is (gateway/relay.py).
            sources = await file_search.ground(gateway, owner, body, exchange.request_id)
            if sources is not None:
                send = sources.wrap(send, stream=False)
        await gateway.proxy.relay(call, exchange.outcome, answer.receive, send)
        return answer.status, parse_answer(answer.body)

    def _record(
        self, session: Session, batch_id: str, line: Owed, status: int, body: Any, row: UsageRow
    ) -> None:
        """The line's answer and its usage row, together; nothing when another run answered
        the line first."""
        answered = session.execute(
            update(BatchLine)
            .where(
                BatchLine.batch_id == batch_id,
                BatchLine.line == line.index,
                BatchLine.done.is_(False),
            )
            .values(done=True, status_code=status, response=body, request_id=row.request_id)
        )
        if answered.rowcount != 1:  # type: ignore[attr-defined]  # a CursorResult's
            return
        self.gateway.recorder.write_in(session.connection(), [row])
        ok = 200 <= status < 300
        session.execute(
            update(Batch)
            .where(Batch.id == batch_id)
            .values(
                completed=Batch.completed + int(ok),
                failed=Batch.failed + int(not ok),
                input_tokens=Batch.input_tokens + (row.prompt_tokens or 0),
                output_tokens=Batch.output_tokens + (row.completion_tokens or 0),
            )
        )


def owed_lines(session: Session, batch_id: str, *, after: int, limit: int) -> list[Owed]:
    """Up to ``limit`` lines still owed, in order, after line ``after``."""
    rows = session.execute(
        select(BatchLine.line, BatchLine.custom_id, BatchLine.body, BatchLine.model)
        .where(
            BatchLine.batch_id == batch_id,
            BatchLine.done.is_(False),
            BatchLine.line > after,
        )
        .order_by(BatchLine.line)
        .limit(limit)
    ).all()
    return [Owed(*row) for row in rows]


def count_owed(session: Session, batch_id: str) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(BatchLine)
            .where(BatchLine.batch_id == batch_id, BatchLine.done.is_(False))
        )
        or 0
    )


def parse_answer(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
