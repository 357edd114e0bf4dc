"""Dialects: the client APIs the proxy serves over chat completions (Anthropic Messages, the
Responses API), each passed as sent to deployments that speak it and translated for the rest.

A relaying endpoint whose client speaks another API than chat completions gives its ``Call`` a
``Dialect``: the proxy asks it where a deployment speaks the client's API natively, what to send
there, and how to turn a chat answer (whole, or stream chunk by chunk) back into the client's.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from hepai_server.errors import HepAIError
from hepai_server.gateway.catalog import Deployment
from hepai_server.protocol.anthropic import StreamTranslator, chat_to_message
from hepai_server.protocol.anthropic import event as anthropic_event
from hepai_server.protocol.openai import Usage
from hepai_server.protocol.sse import event_data, split_events


class Translator(Protocol):
    """Chat completion chunks in, the client's stream events out."""

    def feed(self, chunk: dict[str, Any]) -> bytes: ...

    def close(self) -> bytes: ...

    def fail(self, error: HepAIError) -> bytes: ...


class Dialect(Protocol):
    """A client API served over chat completions."""

    @property
    def ready(self) -> bool:
        """True once the answer is known and ``finishing`` has work to do before its last
        bytes go out."""
        ...

    def native(self, deployment: Deployment) -> tuple[str, dict[str, str]] | None:
        """Where ``deployment`` speaks the client's API (URL and headers), or None."""
        ...

    def native_body(self, deployment: Deployment) -> dict[str, Any]:
        """The request as a native deployment gets it (its ``model`` is set by the proxy)."""
        ...

    def answer(self, chat: dict[str, Any], model: str) -> bytes:
        """A whole chat answer in the client's API, encoded."""
        ...

    def native_answer(self, body: dict[str, Any]) -> None:
        """A native deployment's whole answer, as the client gets it."""
        ...

    def translator(self, model: str) -> Translator: ...

    def native_events(self, events: bytes, usage: Usage | None) -> Usage | None:
        """Read a native stream's events on their way past; the usage they report so far."""
        ...

    def native_error(self, error: HepAIError) -> bytes:
        """The event that ends a native stream whose upstream failed."""
        ...

    async def finishing(self) -> None:
        """Called before the answer's last bytes go out (when ``ready``)."""
        ...


class AnthropicDialect:
    """Anthropic Messages: native to providers with an ``anthropic_base_url`` and to workers
    with an ``anthropic_messages`` method."""

    __slots__ = ("body",)

    #: Nothing to finish: an Anthropic answer is kept nowhere.
    ready = False

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def native(self, deployment: Deployment) -> tuple[str, dict[str, str]] | None:
        if deployment.messages_url is None:
            return None
        return deployment.messages_url, deployment.messages_headers

    def native_body(self, deployment: Deployment) -> dict[str, Any]:
        return self.body

    def answer(self, chat: dict[str, Any], model: str) -> bytes:
        return orjson.dumps(chat_to_message(chat, model))

    def native_answer(self, body: dict[str, Any]) -> None:
        return None

    def translator(self, model: str) -> Translator:
        return StreamTranslator(model)

    def native_events(self, events: bytes, usage: Usage | None) -> Usage | None:
        """Input tokens in message_start, output in message_delta (a running total, so the
        last one counts)."""
        if b'"usage"' not in events:
            return usage
        usage = usage or Usage()
        for event in split_events(events):
            if b'"usage"' not in event:
                continue
            try:
                data = orjson.loads(event_data(event) or b"")
            except orjson.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            block = data.get("usage") or (data.get("message") or {}).get("usage")
            found = Usage.from_block(block)
            usage.prompt_tokens = found.prompt_tokens or usage.prompt_tokens
            usage.completion_tokens = found.completion_tokens or usage.completion_tokens
            usage.cached_tokens = found.cached_tokens or usage.cached_tokens
        if usage.prompt_tokens is not None or usage.completion_tokens is not None:
            usage.total_tokens = (usage.prompt_tokens or 0) + (usage.completion_tokens or 0)
        return usage

    def native_error(self, error: HepAIError) -> bytes:
        return anthropic_event(
            "error", {"type": "error", "error": {"type": error.type, "message": error.message}}
        )

    async def finishing(self) -> None:
        return None
