"""The Responses API, translated to and from OpenAI chat completions.

Models that speak only chat completions (most providers, every worker model) serve Responses
clients (the openai SDK's ``responses.create``, coding agents, the Agents SDK) through these
translations: the request and the conversation it continues into a chat completion request, the
answer back into a Response (a chat stream's typed events are response_stream.py's). No I/O
here: the stored conversation comes in as items, and the response to store goes out as a dict.
"""

from __future__ import annotations

import functools
import itertools
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from hepai_server.errors import InvalidRequest
from hepai_server.protocol.openai import MAX_TOKENS_LIMIT, check_model_id

#: Fields of a Responses request that are translated or mean nothing to chat completions; any
#: other passes to the upstream as is, so vendor extensions keep working.
RESPONSES_FIELDS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "previous_response_id",
        "store",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "temperature",
        "top_p",
        "top_logprobs",
        "text",
        "reasoning",
        "include",
        "truncation",
        "background",
        "metadata",
        "conversation",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "service_tier",
        "user",
        "context_management",
    }
)
#: Fields of a Responses request that chat completions take as they are.
PASSED_FIELDS = frozenset({"temperature", "top_p", "parallel_tool_calls", "stream"})
#: Fields of a Responses request that ``responses_to_chat`` translates one by one; the rest of
#: RESPONSES_FIELDS (and PASSED_FIELDS) are read elsewhere or dropped.
TRANSLATED_FIELDS = frozenset(
    {
        "instructions",
        "max_output_tokens",
        "top_logprobs",
        "user",
        "safety_identifier",
        "reasoning",
        "text",
    }
)
DROPPED_FIELDS = RESPONSES_FIELDS - PASSED_FIELDS - TRANSLATED_FIELDS
#: Hosted tools the platform runs itself: ``file_search`` searches its knowledge bases
#: (gateway/responses.py, ``hosted_tools``).
HOSTED_TOOLS = frozenset({"file_search"})
#: What ``include`` asks for to get a file_search_call's results in the Response.
SEARCH_RESULTS = "file_search_call.results"
#: Fields whose type the translation relies on: the type, and how the error names it.
TYPED_FIELDS: dict[str, tuple[type, str]] = {
    "instructions": (str, "a string"),
    "previous_response_id": (str, "a string"),
    "stream": (bool, "a boolean"),
    "store": (bool, "a boolean"),
    "background": (bool, "a boolean"),
    "tools": (list, "an array"),
    "parallel_tool_calls": (bool, "a boolean"),
    "metadata": (dict, "an object"),
    "text": (dict, "an object"),
    "reasoning": (dict, "an object"),
    "temperature": (float, "a number"),
    "top_p": (float, "a number"),
    "max_output_tokens": (int, f"an integer from 1 to {MAX_TOKENS_LIMIT}"),
}
#: What a Response says of each request setting the request left out; a setting it gave
#: replaces its default. (Read only: every Response shares these values.)
ECHO_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "service_tier": "default",
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
    "metadata": {},
}
STATUS_OF_FINISH = {"length": "max_output_tokens", "content_filter": "content_filter"}
ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
    "file_search_call": "fs",
}


#: The kinds of ids (their prefixes): responses, items, and the calls of function tools.
KINDS = ("resp", "msg", "fc", "fco", "rs", "call", "fs")


class ItemIds:
    """Ids from a random per-process prefix and a counter, as request ids are made
    (gateway/asgi.py): they need to be unique, not secret (a stored response is its owner's
    alone, whatever its id), and a random token each would cost a system call."""

    __slots__ = ("_count", "_heads", "_prefix")

    _prefix: str
    _count: itertools.count[int]
    #: "msg" → "msg_<prefix>", for each of KINDS.
    _heads: dict[str, str]

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self._prefix = secrets.token_hex(12)
        # From 16**24, so that hex() of each, less its "0x1", is 24 digits: cheaper than format.
        self._count = itertools.count(16**24)
        self._heads = {kind: f"{kind}_{self._prefix}" for kind in KINDS}

    def new(self, kind: str) -> str:
        """``resp_``, ``msg_``, ``fc_`` … and 48 hex digits, in OpenAI's shape."""
        return self._heads[kind] + hex(next(self._count))[3:]


_ids = ItemIds()
os.register_at_fork(after_in_child=_ids.reseed)
#: A fresh id for a response or an item: ``new_id("resp")``. A bound method: calling an
#: instance goes through its type's ``__call__``, which costs a third more.
new_id = _ids.new


# --- the request -----------------------------------------------------------------------------


def check_request(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Check the fields the translation relies on; return the model id, and the settings the
    request gives that its Response echoes (``ResponseShape.of``), read in the same pass."""
    model = check_model_id(body.get("model"))
    value = body.get("input")
    if value is not None and not isinstance(value, str | list):
        raise InvalidRequest("'input' must be a string or an array of items", param="input")
    if value is None and not body.get("previous_response_id"):
        raise InvalidRequest("'input' is required", param="input")
    settings: dict[str, Any] = {}
    fields = _FIELDS
    for name, found in body.items():
        if found is None or (field := fields.get(name)) is None:
            continue
        kind, described, echoed = field
        if kind is not None:
            if kind is float:  # a number, and not a boolean
                fits = type(found) in (int, float)
            elif kind is int:
                fits = type(found) is int and 1 <= found <= MAX_TOKENS_LIMIT
            else:
                fits = isinstance(found, kind)
            if not fits:
                raise InvalidRequest(f"'{name}' must be {described}", param=name)
        if echoed:
            settings[name] = found
    return model, settings


#: What ``check_request`` reads of each field it knows: its type and how an error names it
#: (TYPED_FIELDS; None: any), and whether a Response echoes it (ECHO_DEFAULTS).
_FIELDS: dict[str, tuple[type | None, str, bool]] = {
    name: (*TYPED_FIELDS.get(name, (None, "")), name in ECHO_DEFAULTS)
    for name in TYPED_FIELDS.keys() | ECHO_DEFAULTS.keys()
}


def input_items(value: Any) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items (``with_ids`` numbers them for the store)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}
        ]
    items = []
    for item in value:
        if not isinstance(item, dict):
            raise InvalidRequest("each input item must be an object", param="input")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind is None:
            raise InvalidRequest("each input item needs a 'type' or a 'role'", param="input")
        item = {**item, "type": kind}
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item["content"]}]
        items.append(item)
    return items


def with_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items each with an id, as the API lists them (the ones they came with kept)."""
    return [
        {**item, "id": new_id(ID_PREFIX[item["type"]])}
        if not item.get("id") and item["type"] in ID_PREFIX
        else item
        for item in items
    ]


def responses_to_chat(
    body: dict[str, Any], items: list[dict[str, Any]], *, tools: list[dict[str, Any]]
) -> dict[str, Any]:
    """The chat completion request that asks what a Responses request asks: ``items`` is the
    whole conversation (the stored one it continues, then its own input) and ``tools`` its
    function tools (``split_tools``). One pass over the request's fields: the ones chat knows
    by another name are renamed, the Responses API's own dropped, any other passed on."""
    messages: list[dict[str, Any]] = []
    request: dict[str, Any] = {"model": body["model"], "messages": messages}
    for key, value in body.items():
        if key not in RESPONSES_FIELDS:
            request[key] = value
        elif value is None or key in DROPPED_FIELDS:
            continue
        elif key in PASSED_FIELDS:
            request[key] = value
        elif key == "instructions" and value:
            messages.append({"role": "system", "content": value})
        elif key == "max_output_tokens":
            request["max_tokens"] = value
        elif key == "top_logprobs" and isinstance(value, int):
            request.update(logprobs=True, top_logprobs=value)
        elif key == "user" and isinstance(value, str):
            request.setdefault("user", value)
        elif key == "safety_identifier" and isinstance(value, str):
            request["user"] = value
        elif key == "reasoning" and isinstance(effort := value.get("effort"), str):
            request["reasoning_effort"] = effort
        elif key == "text" and (form := _response_format(value.get("format"))) is not None:
            request["response_format"] = form
    messages += items_to_messages(items)
    if not messages:
        raise InvalidRequest("the conversation has no messages", param="input")
    if tools:
        request["tools"] = [
            {
                "type": "function",
                "function": {
                    key: tool[key]
                    for key in ("name", "description", "parameters", "strict")
                    if tool.get(key) is not None
                },
            }
            for tool in tools
        ]
        if (choice := _tool_choice(body.get("tool_choice"))) is not None:
            request["tool_choice"] = choice
    return request


def split_tools(tools: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The request's function tools, and its hosted ones the platform may run itself; any other
    tool type is refused (no chat model can run it)."""
    functions: list[dict[str, Any]] = []
    hosted: list[dict[str, Any]] = []
    for tool in tools or ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                raise InvalidRequest("each function tool needs a 'name'", param="tools")
            functions.append(tool)
        elif kind in HOSTED_TOOLS:
            hosted.append(tool)
        else:
            raise InvalidRequest(
                f"tools of type {kind!r} are not available for this model; function tools are",
                param="tools",
            )
    return functions, hosted


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if isinstance(choice, dict) and choice.get("type") in HOSTED_TOOLS:
        return "auto"  # the platform runs it before the model answers; functions stay free
    if choice is None:
        return None
    raise InvalidRequest(
        "'tool_choice' must be auto, none, required or a function", param="tool_choice"
    )


def _response_format(form: Any) -> dict[str, Any] | None:
    if not isinstance(form, dict) or form.get("type") in (None, "text"):
        return None
    if form.get("type") == "json_object":
        return {"type": "json_object"}
    if form.get("type") == "json_schema":
        schema = {k: form[k] for k in ("name", "schema", "strict", "description") if k in form}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest("'text.format' must be text, json_object or json_schema", param="text")


def items_to_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conversation items as chat messages: a run of function calls becomes one assistant
    message with its tool calls, each output a tool message; reasoning is left out (no chat
    model reads another's)."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            messages.append(_message(item))
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif last is not None and last["role"] == "assistant" and "tool_calls" not in last:
                last["tool_calls"] = [call]
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id"),
                    "content": _text(item.get("output")),
                }
            )
        elif kind in ("reasoning", "file_search_call"):
            continue  # another model's thoughts; a search whose passages that turn had
        else:
            raise InvalidRequest(f"input items of type {kind!r} are not supported", param="input")
    return messages


def _message(item: dict[str, Any]) -> dict[str, Any]:
    role = item.get("role")
    content = item.get("content")
    if role == "user" and type(content) is list and len(content) == 1:
        part = content[0]  # one text part, the common case: a plain string to chat
        if type(part) is dict and part.get("type") == "input_text":
            text = part.get("text")
            return {"role": "user", "content": text if type(text) is str else str(text or "")}
    if role not in ("user", "assistant", "system", "developer"):
        raise InvalidRequest(
            "each message needs role user, assistant, system or developer", param="input"
        )
    if role != "user":
        # Assistant, system and developer turns are text; developer is system to chat models.
        return {"role": "system" if role == "developer" else role, "content": _text(content)}
    if not isinstance(content, list):
        raise InvalidRequest("message content must be a string or content parts", param="input")
    parts = [_part(part) for part in content]
    if all(part["type"] == "text" for part in parts):
        return {"role": "user", "content": "".join(part["text"] for part in parts)}
    return {"role": "user", "content": parts}


def _part(part: Any) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text") or "")}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise InvalidRequest(
                "input_image needs an image_url (an https or data: URL)", param="input"
            )
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        fields = {k: part[k] for k in ("file_id", "file_data", "filename") if part.get(k)}
        if not fields.keys() & {"file_id", "file_data"}:
            raise InvalidRequest("input_file needs a file_id or file_data", param="input")
        return {"type": "file", "file": fields}
    raise InvalidRequest(f"unsupported content part {kind!r}", param="input")


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or part.get("refusal") or "")
            for part in content
            if isinstance(part, dict)
        )
    return str(content)


# --- the answer ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileSearchCall:
    """A file_search the platform ran before the model answered: the output item that reports
    it (first in the output), and the ``file_citation`` annotations of a text of the answer."""

    item: dict[str, Any]
    cite: Callable[[str], list[dict[str, Any]]]


def file_search_call_item(
    item_id: str, status: str, queries: list[str], results: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """A ``file_search_call`` output item; ``results`` only when ``include`` asked for them."""
    return {
        "id": item_id,
        "type": "file_search_call",
        "status": status,
        "queries": queries,
        "results": results,
    }


def file_citation(file_id: str, filename: str, index: int) -> dict[str, Any]:
    """A citation of a file at ``index``, a character position in the text, as OpenAI's."""
    return {"type": "file_citation", "file_id": file_id, "filename": filename, "index": index}


@dataclass(slots=True)
class ResponseShape:
    """What every Response of one request says: its id and model, its own fields, and the
    request's settings (instructions, tools, ...) echoed as OpenAI echoes them.

    A Response is built as its ``head`` (what differs between a request's Responses: status,
    output, usage) and the echo, which is encoded once however often it is sent."""

    id: str
    created_at: int
    model: str
    #: The request, whose settings every Response of it repeats (ECHO_DEFAULTS for the rest).
    request: dict[str, Any]
    #: The file_search the platform ran for it, once it has.
    search: FileSearchCall | None = None
    #: The settings the request gave, and the echo's JSON (both made once, when needed).
    _given: dict[str, Any] | None = None
    _encoded: bytes = b""

    @classmethod
    def of(
        cls, body: dict[str, Any], model: str, settings: dict[str, Any] | None = None
    ) -> ResponseShape:
        """The shape of ``body``'s Responses; ``settings``, those it gave of the ones a Response
        echoes, if ``check_request`` has read them already."""
        return cls(new_id("resp"), int(time.time()), model, body, None, settings)

    def _settings(self) -> dict[str, Any]:
        given = self._given
        if given is None:
            given = self._given = {}
            for key, value in self.request.items():
                if key in ECHO_DEFAULTS and value is not None:
                    given[key] = value
        return given

    @property
    def echo(self) -> dict[str, Any]:
        """The request's settings as a Response repeats them."""
        return {**ECHO_DEFAULTS, **self._settings()}

    def head(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        error: dict[str, Any] | None = None,
        incomplete: str | None = None,
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "model": self.model,
            "output": output,
            "usage": usage,
        }

    def response(self, head: dict[str, Any]) -> dict[str, Any]:
        """The whole Response of ``head``, as a dict (what the conversation store keeps)."""
        return {**head, **self.echo}

    def encode(self, head: dict[str, Any]) -> bytes:
        """The whole Response of ``head``, as JSON."""
        return orjson.dumps(head)[:-1] + self.echo_json()

    def write(
        self,
        status: bytes,
        output: bytes,
        usage: bytes,
        incomplete: bytes = b"null",
        error: bytes = b"null",
    ) -> bytes:
        """The whole Response as JSON from its parts, each JSON already (``output``, its items
        joined by commas): what ``encode(head(...))`` gives, written directly, for the hot
        paths (a text answer, a stream's first and last events)."""
        return _RESPONSE % (
            self.id.encode(),
            self.created_at,
            status,
            error,
            incomplete,
            orjson.dumps(self.model),
            output,
            usage,
            self.echo_json(),
        )

    def echo_json(self) -> bytes:
        """The echo's members as JSON, each after a comma, and the Response's closing brace:
        made once, of the settings the request gave and the defaults' JSON, which is made once
        for all requests."""
        encoded = self._encoded
        if not encoded:
            given = self._settings()
            encoded = _echo_defaults(frozenset(given))
            if given:
                encoded = b"," + orjson.dumps(given)[1:-1] + encoded
            self._encoded = encoded
        return encoded


@functools.lru_cache(maxsize=64)
def _echo_defaults(given: frozenset[str]) -> bytes:
    """The JSON of the echo's defaults a request did not replace, each after a comma, and the
    Response's closing brace (a request sets few of its settings, and the same few)."""
    return (
        b"".join(
            b"," + orjson.dumps(key) + b":" + orjson.dumps(value)
            for key, value in ECHO_DEFAULTS.items()
            if key not in given
        )
        + b"}"
    )


def response_usage(usage: Any) -> dict[str, Any] | None:
    """A chat usage block in the Responses API's form."""
    if type(usage) is not dict:
        return None
    prompt, cached, written, completion, reasoning, total = _usage_counts(usage)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": total,
    }


def _usage_counts(usage: dict[str, Any]) -> tuple[int, int, int, int, int, int]:
    """A chat usage block's counts, as a Response's usage has them: input tokens, cached
    and written to the cache, output tokens, reasoning, total. A count that is not an
    integer is none (0), as the usage row reads it (``Usage.from_block``)."""
    get = usage.get
    prompt = get("prompt_tokens") or 0
    completion = get("completion_tokens") or 0
    details = get("prompt_tokens_details")
    if type(details) is dict:
        cached, written = details.get("cached_tokens") or 0, details.get("cache_write_tokens") or 0
    else:
        cached, written = get("prompt_cache_hit_tokens") or 0, 0
    details = get("completion_tokens_details")
    reasoning = (details.get("reasoning_tokens") or 0) if type(details) is dict else 0
    total = get("total_tokens") or 0
    if not (
        type(prompt) is type(completion) is type(total) is int
        and type(cached) is type(written) is type(reasoning) is int
    ):
        prompt, cached, written, completion, reasoning, total = (
            count if type(count) is int else 0
            for count in (prompt, cached, written, completion, reasoning, total)
        )
    return prompt, cached, written, completion, reasoning, total or prompt + completion


def chat_to_response(chat: dict[str, Any], shape: ResponseShape) -> dict[str, Any]:
    """A chat completion answer as the head of a Response (``ResponseShape.head``)."""
    choices = chat.get("choices")
    choice = choices[0] if choices else {}
    message = choice.get("message") or {}
    search = shape.search
    output: list[dict[str, Any]] = [search.item] if search is not None else []
    if reasoning := message.get("reasoning_content"):
        output.append(reasoning_item(new_id("rs"), reasoning, "completed"))
    if text := message.get("content"):
        cited = search.cite(text) if search is not None else []
        output.append(message_item(new_id("msg"), text, "completed", cited))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(
            function_call_item(
                new_id("fc"),
                call.get("id") or new_id("call"),
                function.get("name") or "",
                function.get("arguments") or "",
                "completed",
            )
        )
    finish = choice.get("finish_reason")
    incomplete = STATUS_OF_FINISH.get(finish) if finish else None
    return shape.head(
        "incomplete" if incomplete else "completed",
        output,
        response_usage(chat.get("usage")),
        None,
        incomplete,
    )


def encode_text_answer(chat: dict[str, Any], shape: ResponseShape) -> bytes | None:
    """The Response of a chat answer that is text alone (the common case), as JSON written
    directly: what ``shape.encode(chat_to_response(chat, shape))`` gives, without building
    the Response's dicts first. None for any other answer (reasoning, tool calls, sources)."""
    try:
        choice = chat["choices"][0]
        message = choice["message"]
        text = message["content"]
        if message.get("tool_calls") or message.get("reasoning_content"):
            return None
        finish = choice.get("finish_reason")
    except (LookupError, TypeError, AttributeError):  # not the shape of a text answer
        return None
    if type(text) is not str or not text or shape.search is not None:
        return None
    incomplete = STATUS_OF_FINISH.get(finish) if finish else None
    return _TEXT_RESPONSE % (
        shape.id.encode(),
        shape.created_at,
        b"incomplete" if incomplete else b"completed",
        incomplete_json(incomplete),
        orjson.dumps(shape.model),
        new_id("msg").encode(),
        orjson.dumps(text),
        usage_json(chat.get("usage")),
        shape.echo_json(),
    )


def text_message_json(item_id: str, text: bytes, annotations: bytes = b"[]") -> bytes:
    """``message_item(item_id, text, "completed", annotations)`` as JSON, its text and
    annotations JSON already."""
    return _TEXT_MESSAGE % (item_id.encode(), text, annotations)


def incomplete_json(reason: str | None) -> bytes:
    """A Response's ``incomplete_details`` as JSON."""
    return b'{"reason":"%s"}' % reason.encode() if reason else b"null"


#: ``ResponseShape.head`` as JSON, in its order, then the echo (``echo_json``).
_RESPONSE = (
    b'{"id":"%s","object":"response","created_at":%d,"status":"%s","background":false,'
    b'"error":%s,"incomplete_details":%s,"model":%s,"output":[%s],"usage":%s%s'
)
#: ``message_item`` as JSON, completed, with its one output_text part.
_TEXT_MESSAGE = (
    b'{"id":"%s","type":"message","status":"completed","role":"assistant","content":'
    b'[{"type":"output_text","text":%s,"annotations":%s,"logprobs":[]}]}'
)
#: ``encode_text_answer``'s Response: ``_RESPONSE`` with no error and ``_TEXT_MESSAGE``,
#: without annotations, its one output item (one template: a format is a call less).
_TEXT_RESPONSE = _RESPONSE.replace(b'"error":%s', b'"error":null').replace(
    b'"output":[%s]',
    b'"output":[' + _TEXT_MESSAGE.replace(b'"annotations":%s', b'"annotations":[]') + b"]",
)
#: ``response_usage`` as JSON, its counts in ``_usage_counts``' order.
_USAGE = (
    b'{"input_tokens":%d,"input_tokens_details":{"cached_tokens":%d,"cache_write_tokens":%d},'
    b'"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":%d},"total_tokens":%d}'
)


def usage_json(usage: Any) -> bytes:
    """``response_usage(usage)`` as JSON, written directly."""
    if type(usage) is not dict:
        return b"null"
    return _USAGE % _usage_counts(usage)


def message_item(
    item_id: str, text: str, status: str, annotations: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """An assistant message item; its one output_text part unless it is in progress."""
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [
            {"type": "output_text", "text": text, "annotations": annotations or [], "logprobs": []}
        ]
        if status != "in_progress"
        else [],
    }


def reasoning_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if status != "in_progress" else []
    return {"id": item_id, "type": "reasoning", "status": status, "summary": [], "content": content}


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def estimate_tokens(size: int, history: list[dict[str, Any]]) -> int:
    """A tokenizer-free estimate of the prompt: about four bytes of UTF-8 a token, of the
    request (``size`` bytes) and of the stored conversation it continues."""
    return (size + (len(orjson.dumps(history)) if history else 0)) // 4 + 1
