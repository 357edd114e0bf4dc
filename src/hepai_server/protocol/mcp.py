"""The Model Context Protocol as the platform speaks it: JSON-RPC messages over Streamable HTTP
(one message a POST, answered with JSON), tool listings and call results, and tools made from a
worker's ``get_register_functions`` (wire spec §2.1). No I/O here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

#: Newest first: an initialize asking for one of these gets it; any other gets the newest.
PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
PROTOCOL_HEADER = b"mcp-protocol-version"
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
#: What a tool name may hold: the characters OpenAI's function names allow, so an agent can
#: hand the tools to any model as they are.
NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_-]")
MAX_NAME = 64
#: Parts kept as they are: a model's name without `_` (its one `/` becomes the `_`); a
#: server's, a function's or a tool's without `/` and with no `_` doubled, leading or trailing.
PLAIN_MODEL = re.compile(r"[A-Za-z0-9-]+(?:/[A-Za-z0-9-]+)?")
PLAIN_NAME = re.compile(r"[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*")
#: Worker types (get_register_functions' strings) as JSON Schema types.
JSON_TYPES = {
    "int": "integer",
    "float": "number",
    "str": "string",
    "bool": "boolean",
    "list": "array",
    "tuple": "array",
    "set": "array",
    "dict": "object",
}


class RpcError(Exception):
    """A JSON-RPC error answered instead of a result."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True, slots=True)
class Message:
    """One JSON-RPC message from the client: a request (with an id), a notification, or a
    response to something the server asked (which this server never does)."""

    id: str | int | None
    method: str | None
    params: dict[str, Any]

    @property
    def is_request(self) -> bool:
        return self.method is not None and self.id is not None


def parse_message(raw: bytes) -> Message:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RpcError(PARSE_ERROR, "the body is not JSON") from None
    if isinstance(body, list):
        raise RpcError(INVALID_REQUEST, "send one JSON-RPC message per request, not a batch")
    if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, "not a JSON-RPC 2.0 message")
    ident, method, params = body.get("id"), body.get("method"), body.get("params")
    if ident is not None and (isinstance(ident, bool) or not isinstance(ident, str | int)):
        raise RpcError(INVALID_REQUEST, "a request id is a string or a number")
    if method is not None and not isinstance(method, str):
        raise RpcError(INVALID_REQUEST, "'method' must be a string")
    if params is not None and not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "'params' must be an object")
    return Message(ident, method, params or {})


def result(ident: str | int | None, value: dict[str, Any]) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": ident, "result": value})


def error(ident: str | int | None, code: int, message: str) -> bytes:
    return orjson.dumps(
        {"jsonrpc": "2.0", "id": ident, "error": {"code": code, "message": message}}
    )


def negotiate(requested: Any) -> str:
    return requested if requested in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]


def tool_name(owner: str, tool: str, plain_owner: re.Pattern[str] = PLAIN_MODEL) -> str:
    """A tool's name from a model and its function (or a server and its tool): only letters,
    digits, _ and -, at most 64 characters, and never the same for two different pairs, so no
    one can register a look-alike that takes another's tool.

    A plain part stays readable (``hepai/markitdown`` and ``interface`` make
    ``hepai_markitdown__interface``); any other is made plain and followed by a digest of the
    original. Neither part ever holds ``__``, so the name splits back one way only. An external
    server's name is ``owner`` with ``plain_owner=PLAIN_NAME``.
    """
    name = _part(owner, plain_owner) + "__" + _part(tool, PLAIN_NAME)
    if len(name) <= MAX_NAME:
        return name
    return name[: MAX_NAME - 17] + "_" + _digest(owner + "\0" + tool)


def _part(value: str, plain: re.Pattern[str]) -> str:
    if plain.fullmatch(value):
        return value.replace("/", "_")
    readable = NAME_CHARACTERS.sub("_", value).strip("_")
    return re.sub("_+", "_", readable)[:24] + "_" + _digest(value)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def input_schema(signature: Any) -> dict[str, Any]:
    """The JSON Schema of a worker method's arguments, from its ``__signature__``: each
    parameter typed as far as its type name says; one without a default (null, and not
    Optional) is required."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for parameter in signature if isinstance(signature, list) else ():
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            continue
        name, kind = parameter["name"], str(parameter.get("type") or "Any")
        optional = "Optional" in kind or "None" in kind
        schema: dict[str, Any] = {}
        base = kind.replace("Optional[", "").split("[")[0].split("|")[0].strip().lower()
        if base in JSON_TYPES:
            schema["type"] = JSON_TYPES[base]
        default = parameter.get("default")
        if default is not None:
            schema["default"] = default
        elif not optional:
            required.append(name)
        properties[name] = schema
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def call_result(value: Any, *, is_error: bool = False) -> dict[str, Any]:
    """A tools/call result: text for a string, JSON text (and the object as structured
    content) for anything else."""
    if isinstance(value, str):
        return {"content": [{"type": "text", "text": value}], "isError": is_error}
    text = orjson.dumps(value).decode()
    answer: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": is_error}
    if isinstance(value, dict):
        answer["structuredContent"] = value
    return answer
