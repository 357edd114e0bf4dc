"""Anthropic Messages, translated to and from OpenAI chat completions.

Models that speak only OpenAI's API serve Anthropic clients (the hepai client's
``client.anthropic``, Claude-style tools) through these translations: the request into a chat
completion, the answer back into a Message, and a chat stream into Anthropic's events, text,
thinking and tool use included. No I/O here.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from hepai_server.errors import HepAIError, InvalidRequest

#: Fields of a Messages request that are translated; any other passes to the upstream as is,
#: so vendor extensions (enable_thinking, top_k, ...) keep working.
MESSAGES_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "temperature",
        "top_p",
        "stream",
        "stop_sequences",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "service_tier",
        "container",
        "mcp_servers",
    }
)

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def messages_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Messages request as the chat completion request that asks the same."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    max_tokens = body.get("max_tokens")
    if type(max_tokens) is not int or max_tokens < 1:
        raise InvalidRequest("'max_tokens' must be a positive integer", param="max_tokens")
    chat: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        chat.append({"role": "system", "content": _text_of(system)})
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequest("each message needs role 'user' or 'assistant'", param="messages")
        chat.extend(_message_to_chat(message))
    request: dict[str, Any] = {k: v for k, v in body.items() if k not in MESSAGES_FIELDS}
    request.update(model=body.get("model"), messages=chat, max_tokens=max_tokens)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        request["user"] = metadata["user_id"]
    for name in ("temperature", "top_p", "stream"):
        if name in body:
            request[name] = body[name]
    if body.get("stop_sequences"):
        request["stop"] = body["stop_sequences"]
    if body.get("tools"):
        request["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.get("name"),
                    "description": tool.get("description", ""),
                    "parameters": tool.get("input_schema") or {"type": "object"},
                },
            }
            for tool in body["tools"]
            if isinstance(tool, dict)
        ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "any":
            request["tool_choice"] = "required"
        elif kind == "tool":
            request["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif kind in ("auto", "none"):
            request["tool_choice"] = kind
    return request


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    raise InvalidRequest("'system' must be a string or text blocks", param="system")


def _message_to_chat(message: dict[str, Any]) -> list[dict[str, Any]]:
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise InvalidRequest("message content must be a string or blocks", param="messages")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block)}})
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        elif kind == "tool_result":
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id"),
                    "content": _text_of(block.get("content") or ""),
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the model's own earlier reasoning: nothing an OpenAI model reads
        else:
            raise InvalidRequest(f"unsupported content block {kind!r}", param="messages")
    out: list[dict[str, Any]] = list(results)
    if role == "assistant" and calls:
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        out.append({"role": "assistant", "content": text or None, "tool_calls": calls})
    elif parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": role, "content": "".join(p["text"] for p in parts)})
        else:
            out.append({"role": role, "content": parts})
    return out


def _image_url(block: dict[str, Any]) -> str:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    if source.get("type") == "url":
        return str(source.get("url"))
    raise InvalidRequest("image blocks need a base64 or url source", param="messages")


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def chat_to_message(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """A chat completion answer as a Message."""
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("reasoning_content"):
        content.append(
            {"type": "thinking", "thinking": message["reasoning_content"], "signature": ""}
        )
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _arguments(function.get("arguments")),
            }
        )
    usage = chat.get("usage") or {}
    return {
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.get("prompt_tokens") or 0,
            "output_tokens": usage.get("completion_tokens") or 0,
        },
    }


def _arguments(text: Any) -> Any:
    try:
        return orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return {"_raw": text}


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class StreamTranslator:
    """Chat completion chunks in, Anthropic stream events out."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.index = -1
        self.block: str | None = None  # "text", "thinking" or "tool:<chat tool index>"
        self.stop_reason = "end_turn"
        self.output_tokens = 0
        self.input_tokens = 0

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out = b""
        if not self.started:
            self.started = True
            out += event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": new_message_id(),
                        "type": "message",
                        "role": "assistant",
                        "content": [],
                        "model": self.model,
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 0, "output_tokens": 0},
                    },
                },
            )
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.input_tokens = usage.get("prompt_tokens") or 0
            self.output_tokens = usage.get("completion_tokens") or 0
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                out += self._open("thinking", {"type": "thinking", "thinking": ""})
                out += self._delta(
                    {"type": "thinking_delta", "thinking": delta["reasoning_content"]}
                )
            if delta.get("content"):
                out += self._open("text", {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": delta["content"]})
            for call in delta.get("tool_calls") or []:
                function = call.get("function") or {}
                key = f"tool:{call.get('index', 0)}"
                if call.get("id") or self.block != key:
                    out += self._open(
                        key,
                        {
                            "type": "tool_use",
                            "id": call.get("id"),
                            "name": function.get("name"),
                            "input": {},
                        },
                        force=True,
                    )
                if function.get("arguments"):
                    out += self._delta(
                        {"type": "input_json_delta", "partial_json": function["arguments"]}
                    )
            if choice.get("finish_reason"):
                self.stop_reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return out

    def close(self) -> bytes:
        out = self.feed({}) if not self.started else b""
        out += self._close_block()
        out += event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
            },
        )
        return out + event("message_stop", {"type": "message_stop"})

    def fail(self, error: HepAIError) -> bytes:
        """The event that ends a stream whose upstream failed after it started."""
        return event(
            "error", {"type": "error", "error": {"type": error.type, "message": error.message}}
        )

    def _open(self, key: str, block: dict[str, Any], *, force: bool = False) -> bytes:
        if self.block == key and not force:
            return b""
        out = self._close_block()
        self.index += 1
        self.block = key
        return out + event(
            "content_block_start",
            {"type": "content_block_start", "index": self.index, "content_block": block},
        )

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event(
            "content_block_delta",
            {"type": "content_block_delta", "index": self.index, "delta": delta},
        )

    def _close_block(self) -> bytes:
        if self.block is None:
            return b""
        self.block = None
        return event("content_block_stop", {"type": "content_block_stop", "index": self.index})


def estimate_tokens(body: dict[str, Any]) -> int:
    """A tokenizer-free estimate for count_tokens: about four bytes of UTF-8 text a token."""
    text = orjson.dumps([body.get("system"), body.get("messages"), body.get("tools")])
    return max(1, len(text) // 4)
