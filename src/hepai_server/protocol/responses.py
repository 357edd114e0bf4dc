"""The Responses API, translated to and from OpenAI chat completions.

Models that speak only chat completions (most providers, every worker model) serve Responses
clients (the openai SDK's ``responses.create``, coding agents, the Agents SDK) through these
translations: the request and the conversation it continues into a chat completion request, the
answer back into a Response (a chat stream's typed events are response_stream.py's). No I/O
here: the stored conversation comes in as items, and the response to store goes out as a dict.
"""

from __future__ import annotations

import secrets
import time
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
#: Hosted tools the platform may run itself one day; ``file_search`` waits for the knowledge
#: bases (see gateway/responses.py, ``hosted_tools``).
HOSTED_TOOLS = frozenset({"file_search"})
STATUS_OF_FINISH = {"length": "max_output_tokens", "content_filter": "content_filter"}
ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
}


def new_id(prefix: str) -> str:
    """An id in OpenAI's shape: ``resp_``, ``msg_``, ``fc_`` … and 48 hex digits."""
    return f"{prefix}_{secrets.token_hex(24)}"


# --- the request -----------------------------------------------------------------------------


def check_request(body: dict[str, Any]) -> str:
    """Check the fields the translation relies on; return the model id."""
    model = check_model_id(body.get("model"))
    value = body.get("input")
    if value is not None and not isinstance(value, str | list):
        raise InvalidRequest("'input' must be a string or an array of items", param="input")
    if value is None and not body.get("previous_response_id"):
        raise InvalidRequest("'input' is required", param="input")
    for name, kind, described in (
        ("instructions", str, "a string"),
        ("previous_response_id", str, "a string"),
        ("stream", bool, "a boolean"),
        ("store", bool, "a boolean"),
        ("background", bool, "a boolean"),
        ("tools", list, "an array"),
        ("parallel_tool_calls", bool, "a boolean"),
        ("metadata", dict, "an object"),
        ("text", dict, "an object"),
        ("reasoning", dict, "an object"),
    ):
        found = body.get(name)
        if found is not None and not isinstance(found, kind):
            raise InvalidRequest(f"'{name}' must be {described}", param=name)
    limit = body.get("max_output_tokens")
    if limit is not None and (type(limit) is not int or not 1 <= limit <= MAX_TOKENS_LIMIT):
        raise InvalidRequest(
            f"'max_output_tokens' must be an integer from 1 to {MAX_TOKENS_LIMIT}",
            param="max_output_tokens",
        )
    for name in ("temperature", "top_p"):
        number = body.get(name)
        if number is not None and type(number) not in (int, float):
            raise InvalidRequest(f"'{name}' must be a number", param=name)
    return model


def input_items(value: Any) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items, each with an id (as the API lists them)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
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
        if not item.get("id") and kind in ID_PREFIX:
            item["id"] = new_id(ID_PREFIX[kind])
        items.append(item)
    return items


def responses_to_chat(
    body: dict[str, Any], items: list[dict[str, Any]], *, tools: list[dict[str, Any]]
) -> dict[str, Any]:
    """The chat completion request that asks what a Responses request asks: ``items`` is the
    whole conversation (the stored one it continues, then its own input) and ``tools`` its
    function tools (``split_tools``)."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages += items_to_messages(items)
    if not messages:
        raise InvalidRequest("the conversation has no messages", param="input")
    request: dict[str, Any] = {k: v for k, v in body.items() if k not in RESPONSES_FIELDS}
    request.update(model=body["model"], messages=messages)
    for name in ("temperature", "top_p", "parallel_tool_calls", "stream"):
        if body.get(name) is not None:
            request[name] = body[name]
    if body.get("max_output_tokens") is not None:
        request["max_tokens"] = body["max_output_tokens"]
    if isinstance(body.get("top_logprobs"), int):
        request.update(logprobs=True, top_logprobs=body["top_logprobs"])
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str):
        request["user"] = user
    effort = (body.get("reasoning") or {}).get("effort")
    if isinstance(effort, str):
        request["reasoning_effort"] = effort
    if (response_format := _response_format((body.get("text") or {}).get("format"))) is not None:
        request["response_format"] = response_format
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
        elif kind == "reasoning":
            continue
        else:
            raise InvalidRequest(f"input items of type {kind!r} are not supported", param="input")
    return messages


def _message(item: dict[str, Any]) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise InvalidRequest(
            "each message needs role user, assistant, system or developer", param="input"
        )
    content = item.get("content")
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


@dataclass(slots=True)
class ResponseShape:
    """What every Response of one request echoes: its id, its model, and the request's own
    settings (instructions, tools, ...), as OpenAI returns them."""

    id: str
    created_at: int
    model: str
    request: dict[str, Any]

    @classmethod
    def of(cls, body: dict[str, Any], model: str) -> ResponseShape:
        return cls(new_id("resp"), int(time.time()), model, body)

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        *,
        error: dict[str, Any] | None = None,
        incomplete: str | None = None,
    ) -> dict[str, Any]:
        body = self.request
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_logprobs": body.get("top_logprobs", 0),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": usage,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }


def response_usage(usage: Any) -> dict[str, Any] | None:
    """A chat usage block in the Responses API's form."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or usage.get(
        "prompt_cache_hit_tokens"
    )
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached or 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning or 0},
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }


def chat_to_response(chat: dict[str, Any], shape: ResponseShape) -> dict[str, Any]:
    """A chat completion answer as a Response."""
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    if message.get("reasoning_content"):
        output.append(reasoning_item(new_id("rs"), message["reasoning_content"], "completed"))
    if message.get("content"):
        output.append(message_item(new_id("msg"), message["content"], "completed"))
    for call in message.get("tool_calls") or []:
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
    incomplete = STATUS_OF_FINISH.get(choice.get("finish_reason") or "stop")
    return shape.response(
        "incomplete" if incomplete else "completed",
        output,
        response_usage(chat.get("usage")),
        incomplete=incomplete,
    )


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [output_text(text)] if status != "in_progress" else [],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


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


def estimate_tokens(body: dict[str, Any], items: list[dict[str, Any]]) -> int:
    """A tokenizer-free estimate of the prompt: about four bytes of UTF-8 a token."""
    return max(1, len(orjson.dumps([body.get("instructions"), items, body.get("tools")])) // 4)
