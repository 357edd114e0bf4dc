"""The Responses API's ``POST /responses``: in its frame like chat (the same permissions,
admission and usage row), passed through to deployments that serve the Responses API natively
(providers with a ``responses_base_url``, workers with a ``responses`` method) and translated to
chat completions for every other model, streams included.

A ``file_search`` tool is run by the platform over its knowledge bases, as on the chat route
(file_search.py): once the request is admitted its stores are searched as the caller, the
passages go into the translated prompt, and the Response reports the search as a
``file_search_call`` item and cites its sources in ``file_citation`` annotations. Such a
request is always translated, even for a deployment that serves Responses natively: the
stores it names are this platform's, which no provider can search.

A response is kept (unless the request says ``store: false``) with the input items it answered,
before its last bytes go out, so a client's next request can continue it at once with
``previous_response_id``. A conversation continued on a deployment that did not answer its
previous turn natively is sent there whole, as input items.

``run_response`` runs one request without a client connection, for background jobs (the Batch
API's ``/v1/responses`` lines), and leaves its usage row to its caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from hepai_server.errors import HepAIError, InvalidRequest
from hepai_server.gateway import file_search
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
    SEARCH_RESULTS,
    FileSearchCall,
    ResponseShape,
    chat_to_response,
    check_request,
    encode_text_answer,
    estimate_tokens,
    file_citation,
    file_search_call_item,
    input_items,
    new_id,
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


def hosted_tools(tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The hosted tools the platform runs itself, checked: the request's ``file_search``
    tool (its stores are searched once the request is admitted, ``ground``), or None."""
    if len(tools) > 1:
        raise InvalidRequest("a request may have one file_search tool", param="tools")
    return file_search.check_tool(tools[0]) if tools else None


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
        "search",
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
        search: dict[str, Any] | None = None,
    ) -> None:
        self.body = body
        #: The file_search tool the platform runs for the request, if it has one.
        self.search = search
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
        if deployment.responses_url is None or self.search is not None:
            # A file_search names this platform's knowledge bases, which no provider can
            # search: the platform searches them and the model answers by translation.
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
        if self._keep is None and (encoded := encode_text_answer(chat, self.shape)):
            return encoded  # nothing to keep: the JSON is all that is needed
        head = chat_to_response(chat, self.shape)
        if self._keep is None:
            return self.shape.encode(head)
        self.final = final = self.shape.response(head)
        return orjson.dumps(final)

    async def ground(self, exchange: Exchange, caller: Caller, chat: dict[str, Any]) -> None:
        """Run the request's file_search as the caller and put its passages into ``chat``,
        the translated request; the Response reports it and cites its sources."""
        assert self.search is not None
        sources = await file_search.ground_messages(
            exchange.gateway,
            caller,
            self.search,
            chat["messages"],
            exchange.request_id,
            param="input",
        )
        include = self.body.get("include")
        results = None
        if isinstance(include, list) and SEARCH_RESULTS in include:
            results = [
                {
                    "file_id": hit.file_id,
                    "filename": hit.filename,
                    "score": hit.score,
                    "text": hit.text,
                    "attributes": hit.attributes,
                }
                for hit in sources.hits
            ]

        def cite(text: str) -> list[dict[str, Any]]:
            return [
                file_citation(hit.file_id, hit.filename, match.start())
                for match, hit in sources.cited(text)
            ]

        item = file_search_call_item(new_id("fs"), "completed", [sources.query], results)
        self.shape.search = FileSearchCall(item, cite)

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
    platform knows, without reasoning (no model reads another's) and this platform's
    searches."""
    kept = []
    for item in items:
        if item.get("type") in ("reasoning", "file_search_call"):
            continue  # a search of this platform's stores means nothing elsewhere
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
        await admit(exchange, caller, call, prompt=prompt, output=output)
        await gateway.proxy.relay(call, exchange.outcome, receive, send)


async def prepare(
    exchange: Exchange, caller: Caller, body: dict[str, Any], size: int
) -> tuple[Call, int, int]:
    """The checked request (``size`` bytes) as a call to its model, translated where it must
    be, with its prompt and output tokens estimated for admission."""
    gateway = exchange.gateway
    model_id, settings = check_request(body)
    exchange.model = model_id
    if body.get("background"):
        raise InvalidRequest(
            "background responses are not available on this platform; stream instead",
            param="background",
        )
    functions, hosted = split_tools(body.get("tools"))
    search = hosted_tools(hosted)
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
        shape=ResponseShape.of(body, model_id, settings),
        keep=keeper(exchange, caller) if body.get("store", True) else None,
        search=search,
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
    prompt = estimate_tokens(size, history)
    if search is not None:
        prompt += await file_search.passage_tokens(gateway, caller, search)
    return call, prompt, int(output)


async def admit(
    exchange: Exchange, caller: Caller, call: Call, *, prompt: int, output: int
) -> None:
    """Admit the call as chat's are; then run the file_search it asks for (after admission,
    as on chat: a caller the limits refuse gets no searches, nor their usage rows)."""
    await exchange.admit(caller, prompt=prompt, output=output, embedding=False)
    dialect = call.dialect
    if isinstance(dialect, ResponsesDialect) and dialect.search is not None:
        await dialect.ground(exchange, caller, call.body)


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
    """One Responses request run to its end with no client connection (a Batch API line):
    made non-streaming, then checked, admitted, its file_search run and relayed in ``exchange``
    as a live request is, and kept in the conversation store before this returns (unless it
    says ``store: false``). Returns the answer's status and JSON body, an upstream's 4xx about
    the request included. An error before any answer (a bad request, a model the caller may
    not use, the limits' 429, a store they may not read, an upstream that failed or timed
    out) is raised as a ``HepAIError`` instead. Either way the caller then calls
    ``exchange.finish(caller)``, which records the request's one usage row and settles its
    admission, as a Frame does."""
    body = {**body, "stream": False}
    call, prompt, output = await prepare(exchange, caller, body, len(orjson.dumps(body)))
    await admit(exchange, caller, call, prompt=prompt, output=output)
    answer = Collected()
    await exchange.gateway.proxy.relay(call, exchange.outcome, answer.receive, answer.send)
    return answer.status, answer.body
