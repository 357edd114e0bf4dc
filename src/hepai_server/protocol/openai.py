"""The OpenAI endpoints the gateway serves and the few request fields it reads and checks.

Everything else in a request passes to the upstream untouched; these checks exist so that a bad
request gets a clear 400 here instead of a confusing answer, or a bill, from an upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from hepai_server.errors import InvalidRequest

#: Larger than any model's output window, small enough to catch 10**12 and friends.
MAX_TOKENS_LIMIT = 10_000_000
MAX_N = 128
MAX_MODEL_ID = 256


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    #: The path below the upstream's base URL.
    path: str
    model_types: frozenset[str]
    can_stream: bool
    #: The method a DDF worker serves this endpoint with (wire spec §2.10).
    worker_function: str


CHAT = Endpoint(
    "chat.completions", "/chat/completions", frozenset({"chat"}), True, "chat_completions"
)
COMPLETIONS = Endpoint(
    "completions", "/completions", frozenset({"completion", "chat"}), True, "completions"
)
EMBEDDINGS = Endpoint("embeddings", "/embeddings", frozenset({"embedding"}), False, "embeddings")
RERANK = Endpoint("rerank", "/rerank", frozenset({"rerank"}), False, "rerank")
#: Audio and images (gateway/media.py): the form uploads and what they answer pass through.
TRANSCRIPTIONS = Endpoint(
    "audio.transcriptions",
    "/audio/transcriptions",
    frozenset({"audio"}),
    False,
    "audio_transcriptions",
)
TRANSLATIONS = Endpoint(
    "audio.translations", "/audio/translations", frozenset({"audio"}), False, "audio_translations"
)
SPEECH = Endpoint("audio.speech", "/audio/speech", frozenset({"tts"}), False, "audio_speech")
IMAGE_GENERATIONS = Endpoint(
    "images.generations",
    "/images/generations",
    frozenset({"image"}),
    False,
    "image_generations",
)
IMAGE_EDITS = Endpoint("images.edits", "/images/edits", frozenset({"image"}), False, "image_edits")


def check_model_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    if len(value) > MAX_MODEL_ID or not value.isprintable():
        raise InvalidRequest(
            f"'model' must be at most {MAX_MODEL_ID} printable characters",
            param="model",
        )
    return value


def check_request(endpoint: Endpoint, body: dict[str, Any]) -> str:
    """Check the fields the gateway relies on; return the model id."""
    model = check_model_id(body.get("model"))
    if endpoint.can_stream:
        _optional(body, "stream", bool, "a boolean")
        _optional(body, "stream_options", dict, "an object")
        _optional_int(body, "n", 1, MAX_N)
        _optional_int(body, "max_tokens", 1, MAX_TOKENS_LIMIT)
        _optional_int(body, "max_completion_tokens", 1, MAX_TOKENS_LIMIT)
        for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
            _optional_number(body, name)
    if endpoint is CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("'messages' must be a non-empty array", param="messages")
        if not all(isinstance(message, dict) for message in messages):
            raise InvalidRequest("each message must be an object", param="messages")
    elif endpoint is COMPLETIONS:
        if not isinstance(body.get("prompt"), str | list):
            raise InvalidRequest("'prompt' must be a string or an array", param="prompt")
    elif endpoint is EMBEDDINGS:
        value = body.get("input")
        if not (isinstance(value, str) or (isinstance(value, list) and value)):
            raise InvalidRequest("'input' must be a string or a non-empty array", param="input")
        if body.get("encoding_format", "float") not in ("float", "base64"):
            raise InvalidRequest(
                "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
            )
    elif endpoint is RERANK:
        if not isinstance(body.get("query"), str):
            raise InvalidRequest("'query' must be a string", param="query")
        documents = body.get("documents")
        if not isinstance(documents, list) or not documents:
            raise InvalidRequest("'documents' must be a non-empty array", param="documents")
        _optional_int(body, "top_n", 1, 1_000_000)
    return model


def _optional(body: dict[str, Any], name: str, kind: type, described: str) -> None:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise InvalidRequest(f"'{name}' must be {described}", param=name)


def _optional_int(body: dict[str, Any], name: str, low: int, high: int) -> None:
    value = body.get(name)
    if value is None:
        return
    if type(value) is not int or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be an integer from {low} to {high}", param=name)


def _optional_number(body: dict[str, Any], name: str) -> None:
    value = body.get(name)
    if value is not None and (type(value) not in (int, float)):
        raise InvalidRequest(f"'{name}' must be a number", param=name)


@dataclass(slots=True)
class Usage:
    """What one request consumed: tokens, as far as the upstream reported them, or the pages
    and bytes a tool processed."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    estimated: bool = False
    pages: int | None = None
    bytes: int | None = None

    @classmethod
    def from_tool_header(cls, value: str | None) -> Usage:
        """A worker's ``X-HepAI-Usage`` header: ``{"pages": n, "bytes": n, "tokens": n}``."""
        if not value or len(value) > 1024:
            return cls()
        try:
            block = orjson.loads(value)
        except orjson.JSONDecodeError:
            return cls()
        if not isinstance(block, dict):
            return cls()
        tokens = _count(block.get("tokens"))
        return cls(
            prompt_tokens=tokens,
            total_tokens=tokens,
            pages=_count(block.get("pages")),
            bytes=_count(block.get("bytes")),
        )

    @classmethod
    def from_block(cls, block: Any) -> Usage:
        """Read OpenAI's usage block, chat's or the Responses API's (and DeepSeek's, Jina's
        rerank and Anthropic's usage)."""
        if not isinstance(block, dict):
            return cls()
        prompt = _count(block.get("prompt_tokens", block.get("input_tokens")))
        completion = _count(block.get("completion_tokens", block.get("output_tokens")))
        total = _count(block.get("total_tokens"))
        details = block.get("prompt_tokens_details") or block.get("input_tokens_details")
        cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
        if cached is None:
            cached = _count(
                block.get("prompt_cache_hit_tokens", block.get("cache_read_input_tokens"))
            )
        details = block.get("completion_tokens_details") or block.get("output_tokens_details")
        reasoning = _count(details.get("reasoning_tokens")) if isinstance(details, dict) else None
        if total is None and (prompt is not None or completion is not None):
            total = (prompt or 0) + (completion or 0)
        return cls(prompt, completion, total, cached, reasoning)


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None
