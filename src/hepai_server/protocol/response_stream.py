"""The Responses API's typed stream events, from a chat completion stream.

A chat stream's chunks go in as they arrive; what comes out is the event sequence of OpenAI's
Responses API (``response.created``, each output item's ``added``, deltas and ``done`` events,
``response.completed``), numbered, in server-sent event framing. No I/O here.
"""

from __future__ import annotations

from typing import Any

import orjson

from hepai_server.errors import HepAIError
from hepai_server.protocol.responses import (
    STATUS_OF_FINISH,
    ResponseShape,
    function_call_item,
    message_item,
    new_id,
    output_text,
    reasoning_item,
    response_usage,
)

# --- the stream ------------------------------------------------------------------------------


class ResponseStream:
    """Chat completion chunks in, the Responses API's typed events out.

    One output item is open at a time: reasoning, the message, or a function call; a chunk of
    another kind closes it (its ``…done`` and ``output_item.done`` events) and opens the next.
    ``close`` ends the response (``response.completed``, or ``response.incomplete`` when the
    model ran out of tokens) and leaves it in ``final`` for the conversation store.
    """

    __slots__ = (
        "_arguments",
        "_call",
        "_item",
        "_kind",
        "_parts",
        "_sequence",
        "final",
        "finish",
        "output",
        "shape",
        "started",
        "usage",
    )

    def __init__(self, shape: ResponseShape) -> None:
        self.shape = shape
        self.started = False
        self._sequence = 0
        self.output: list[dict[str, Any]] = []
        #: The open item: "reasoning", "message" or "tool:<chat tool index>", and its id.
        self._kind: str | None = None
        self._item = ""
        self._parts: list[str] = []
        self._call: tuple[str, str] = ("", "")  # call id, name
        self._arguments: list[str] = []
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        data["type"] = kind
        data["sequence_number"] = self._sequence
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _start(self) -> bytes:
        self.started = True
        snapshot = self.shape.response("in_progress", [], None)
        return self._event("response.created", {"response": snapshot}) + self._event(
            "response.in_progress", {"response": snapshot}
        )

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self.started else self._start()
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # a Response has one answer; n > 1 has no meaning here
            delta = choice.get("delta") or {}
            if text := delta.get("reasoning_content"):
                out += self._open("reasoning") + self._reasoning_delta(text)
            if text := delta.get("content"):
                out += self._open("message") + self._text_delta(text)
            for call in delta.get("tool_calls") or ():
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def _open(self, kind: str) -> bytes:
        if self._kind == kind:
            return b""
        out = self._close_item()
        self._kind, self._parts = kind, []
        index = len(self.output)
        if kind == "reasoning":
            self._item = new_id("rs")
            return out + self._event(
                "response.output_item.added",
                {"output_index": index, "item": reasoning_item(self._item, "", "in_progress")},
            )
        self._item = new_id("msg")
        return (
            out
            + self._event(
                "response.output_item.added",
                {"output_index": index, "item": message_item(self._item, "", "in_progress")},
            )
            + self._event(
                "response.content_part.added",
                {
                    "item_id": self._item,
                    "output_index": index,
                    "content_index": 0,
                    "part": output_text(""),
                },
            )
        )

    def _reasoning_delta(self, text: str) -> bytes:
        self._parts.append(text)
        return self._event(
            "response.reasoning_text.delta",
            {
                "item_id": self._item,
                "output_index": len(self.output),
                "content_index": 0,
                "delta": text,
            },
        )

    def _text_delta(self, text: str) -> bytes:
        self._parts.append(text)
        return self._event(
            "response.output_text.delta",
            {
                "item_id": self._item,
                "output_index": len(self.output),
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            },
        )

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        function = call.get("function") or {}
        key = f"tool:{call.get('index', 0)}"
        out = b""
        if self._kind != key or call.get("id"):
            out += self._close_item()
            self._kind, self._item = key, new_id("fc")
            self._call = (call.get("id") or new_id("call"), function.get("name") or "")
            self._arguments = []
            out += self._event(
                "response.output_item.added",
                {
                    "output_index": len(self.output),
                    "item": function_call_item(self._item, *self._call, "", "in_progress"),
                },
            )
        if arguments := function.get("arguments"):
            self._arguments.append(arguments)
            out += self._event(
                "response.function_call_arguments.delta",
                {"item_id": self._item, "output_index": len(self.output), "delta": arguments},
            )
        return out

    def _close_item(self) -> bytes:
        kind, index = self._kind, len(self.output)
        if kind is None:
            return b""
        self._kind = None
        where = {"item_id": self._item, "output_index": index}
        if kind == "reasoning":
            text = "".join(self._parts)
            item = reasoning_item(self._item, text, "completed")
            out = self._event(
                "response.reasoning_text.done", {**where, "content_index": 0, "text": text}
            )
        elif kind == "message":
            text = "".join(self._parts)
            item = message_item(self._item, text, "completed")
            out = self._event(
                "response.output_text.done",
                {**where, "content_index": 0, "text": text, "logprobs": []},
            ) + self._event(
                "response.content_part.done",
                {**where, "content_index": 0, "part": output_text(text)},
            )
        else:
            arguments = "".join(self._arguments)
            item = function_call_item(self._item, *self._call, arguments, "completed")
            out = self._event(
                "response.function_call_arguments.done",
                {**where, "arguments": arguments, "name": self._call[1]},
            )
        self.output.append(item)
        return out + self._event("response.output_item.done", {"output_index": index, "item": item})

    def close(self) -> bytes:
        """The events that end the response, once the upstream's stream has ended."""
        out = b"" if self.started else self._start()
        out += self._close_item()
        incomplete = STATUS_OF_FINISH.get(self.finish or "stop")
        self.final = self.shape.response(
            "incomplete" if incomplete else "completed",
            self.output,
            response_usage(self.usage),
            incomplete=incomplete,
        )
        kind = "response.incomplete" if incomplete else "response.completed"
        return out + self._event(kind, {"response": self.final})

    def fail(self, failure: HepAIError) -> bytes:
        """The events that end a response whose upstream failed mid-stream."""
        out = b"" if self.started else self._start()
        out += self._close_item()
        code, message = failure.code or failure.type, failure.message
        out += self._event("error", {"code": code, "message": message, "param": None})
        error = {"code": code, "message": message}
        failed = self.shape.response("failed", self.output, response_usage(self.usage), error=error)
        return out + self._event("response.failed", {"response": failed})
