"""The Responses API's ``POST /responses``: in its frame like chat (the same permissions,
admission and usage row), passed through to deployments that serve the Responses API natively
(providers with a ``responses_base_url``, workers with a ``responses`` method) and translated to
chat completions for every other model, streams included.

A response is kept (unless the request says ``store: false``) with the input items it answered,
before its last bytes go out, so a client's next request can continue it at once with
``previous_response_id``. A conversation continued on a deployment that did not answer its
previous turn natively is sent there whole, as input items.

``run_response`` runs one request without a client connection, for background jobs (the Batch
API's ``/v1/responses`` lines).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from hepai_server.errors import HepAIError, InvalidRequest
from hepai_server.gateway.asgi import (
    Collected,
    Receive,
    Scope,
    Send,
    parse_content_length,
    parse_json_object,
    read_body,
)
from hepai_server.gateway.catalog import Deployment
from hepai_server.gateway.dialect import Translator
from hepai_server.gateway.frame import Exchange
from hepai_server.gateway.proxy import Call
from hepai_server.gateway.relay import resolve_model
from hepai_server.protocol.openai import CHAT, Usage
from hepai_server.protocol.response_stream import ResponseStream
from hepai_server.protocol.responses import (
    ResponseShape,
    chat_to_response,
    check_request,
    estimate_tokens,
    input_items,
    responses_to_chat,
    split_tools,
    with_ids,
)
from hepai_server.protocol.sse import event_data, split_events
from hepai_server.services import responses as store
from hepai_server.services.accounts import Caller
from hepai_server.services.responses import Conversation

log = logging.getLogger(__name__)

#: Keeps a finished response: (the response, the input items it answered, the provider that
#: answered natively or None).
Keep = Callable[[dict[str, Any], list[dict[str, Any]], str | None], Awaitable[None]]
#: The native stream events that carry the finished response.
_TERMINAL = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"')


def hosted_tools(tools: list[dict[str, Any]]) -> None:
    """The seam for hosted tools the platform runs itself: ``file_search`` will search the
    caller's knowledge bases here (its results given to the model as a tool's output) once
    they exist; until then it is refused, naming why."""
    for tool in tools:
        raise InvalidRequest(
            f"the {tool.get('type')} tool is not available on this platform yet (knowledge "
            "bases are coming); pass the documents' text as input instead",
            param="tools",
        )


class ResponsesDialect:
    """The Responses API as a dialect of the proxy (gateway/dialect.py)."""

    __slots__ = (
        "_keep",
        "_kept",
        "_stream",
        "body",
        "conversation",
        "final",
        "items",
        "provider",
        "shape",
    )

    def __init__(
        self,
        *,
        body: dict[str, Any],
        items: list[dict[str, Any]],
        conversation: Conversation | None,
        shape: ResponseShape,
        keep: Keep | None,
    ) -> None:
        self.body = body
        self.items = items
        self.conversation = conversation
        self.shape = shape
        self._keep = keep
        self._kept = False
        self._stream: ResponseStream | None = None
        #: The finished response, once known; and the provider that answered it natively.
        self.final: dict[str, Any] | None = None
        self.provider: str | None = None

    @property
    def ready(self) -> bool:
        if self._keep is None:
            return False  # store: false: nothing to do before the last bytes
        if self.final is None and self._stream is not None and self._stream.finished:
            self.final = self.shape.response(self._stream.finished)
        return self.final is not None and not self._kept

    def native(self, deployment: Deployment) -> tuple[str, dict[str, str]] | None:
        if deployment.responses_url is None:
            return None
        return deployment.responses_url, deployment.headers

    def native_body(self, deployment: Deployment) -> dict[str, Any]:
        self.provider = deployment.provider
        body = dict(self.body)
        conversation = self.conversation
        if conversation is not None and conversation.provider != deployment.provider:
            # This deployment never saw the earlier turns: they go as input.
            body.pop("previous_response_id", None)
            own = body.get("input")
            if isinstance(own, str):
                own = [{"role": "user", "content": own}]
            body["input"] = [*portable(conversation.items), *(own or [])]
        return body

    def answer(self, chat: dict[str, Any], model: str) -> bytes:
        self.provider = None
        head = chat_to_response(chat, self.shape)
        if self._keep is not None:
            self.final = self.shape.response(head)
        return self.shape.encode(head)

    def native_answer(self, body: dict[str, Any]) -> None:
        if body.get("object") == "response" and isinstance(body.get("id"), str):
            self.final = body

    def translator(self, model: str) -> Translator:
        self.provider = None
        self._stream = ResponseStream(self.shape)
        return self._stream

    def native_events(self, events: bytes, usage: Usage | None) -> Usage | None:
        if not any(marker in events for marker in _TERMINAL):
            return usage
        for event in split_events(events):
            if not any(marker in event for marker in _TERMINAL):
                continue
            try:
                data = orjson.loads(event_data(event) or b"")
            except orjson.JSONDecodeError:
                continue
            response = data.get("response") if isinstance(data, dict) else None
            if isinstance(response, dict):
                usage = Usage.from_block(response.get("usage"))
                if response.get("status") != "failed":
                    self.native_answer(response)
        return usage

    def native_error(self, error: HepAIError) -> bytes:
        data = {"type": "error", "code": error.code or error.type, "message": error.message}
        return b"event: error\ndata: " + orjson.dumps({**data, "param": None}) + b"\n\n"

    async def finishing(self) -> None:
        if self._kept or self.final is None:
            return
        self._kept = True
        if self._keep is not None:
            await self._keep(self.final, with_ids(self.items), self.provider)


def portable(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conversation items as another deployment can take them: without the ids only this
    platform knows, and without reasoning (no model reads another's)."""
    kept = []
    for item in items:
        if item.get("type") == "reasoning":
            continue
        kept.append({k: v for k, v in item.items() if k not in ("id", "status")})
    return kept


class ResponsesRelay:
    """The handler of ``POST /responses``."""

    __slots__ = ()

    name = "responses"

    async def __call__(
        self, exchange: Exchange, caller: Caller, scope: Scope, receive: Receive, send: Send
    ) -> None:
        gateway = exchange.gateway
        raw = await read_body(
            receive,
            declared=parse_content_length(exchange.headers.get(b"content-length")),
            limit=gateway.settings.max_body_bytes,
        )
        call, prompt, output = await prepare(exchange, caller, parse_json_object(raw), len(raw))
        await exchange.admit(caller, prompt=prompt, output=output, embedding=False)
        await gateway.proxy.relay(call, exchange.outcome, receive, send)


async def prepare(
    exchange: Exchange, caller: Caller, body: dict[str, Any], size: int
) -> tuple[Call, int, int]:
    """The checked request (``size`` bytes) as a call to its model, translated where it must
    be, with its prompt and output tokens estimated for admission."""
    gateway = exchange.gateway
    exchange.model = model_id = check_request(body)
    if body.get("background"):
        raise InvalidRequest(
            "background responses are not available on this platform; stream instead",
            param="background",
        )
    functions, hosted = split_tools(body.get("tools"))
    hosted_tools(hosted)
    items = input_items(body.get("input"))
    conversation = None
    if previous := body.get("previous_response_id"):
        now = datetime.now(UTC)
        conversation = await gateway.transact(
            lambda s: store.conversation(s, user_id=caller.user_id, response_id=previous, now=now)
        )
    model = await resolve_model(gateway, caller, model_id, CHAT, exchange.request_id)
    history = conversation.items if conversation is not None else []
    dialect = ResponsesDialect(
        body=body,
        items=items,
        conversation=conversation,
        shape=ResponseShape.of(body, model_id),
        keep=keeper(exchange, caller) if body.get("store", True) else None,
    )
    call = Call.create(
        request_id=exchange.request_id,
        caller=caller,
        endpoint=CHAT,
        model=model,
        body=responses_to_chat(body, [*history, *items], tools=functions),
        started=exchange.started,
        dialect=dialect,
    )
    exchange.stream = call.stream
    output = body.get("max_output_tokens") or gateway.settings.default_output_tokens
    return call, estimate_tokens(size, history), int(output)


def keeper(exchange: Exchange, caller: Caller) -> Keep:
    """Keeps a finished response in the conversation store as the caller's; a store that
    fails is logged, not the request's failure (the answer is good, only its sequel is not)."""
    gateway = exchange.gateway
    retention = timedelta(days=gateway.settings.responses_retention_days)

    async def keep(
        response: dict[str, Any], items: list[dict[str, Any]], provider: str | None
    ) -> None:
        def save() -> None:
            with gateway.engine.begin() as connection:
                store.save_response(
                    connection,
                    user_id=caller.user_id,
                    response=response,
                    input_items=items,
                    provider=provider,
                    now=datetime.now(UTC),
                    retention=retention,
                )

        try:
            await asyncio.to_thread(save)
        except Exception:
            log.warning("keeping response %s failed", response.get("id"), exc_info=True)

    return keep


async def run_response(
    exchange: Exchange, caller: Caller, body: dict[str, Any]
) -> tuple[int, bytes]:
    """One Responses request run to its end with no client connection (a Batch line): admitted
    and relayed in ``exchange`` as a live one is; the answer's status and JSON body. Whoever
    calls it records the exchange's usage row and settles its ticket, as a Frame does."""
    body = {**body, "stream": False}
    call, prompt, output = await prepare(exchange, caller, body, len(orjson.dumps(body)))
    await exchange.admit(caller, prompt=prompt, output=output, embedding=False)
    answer = Collected()
    await exchange.gateway.proxy.relay(call, exchange.outcome, answer.receive, answer.send)
    return answer.status, answer.body
