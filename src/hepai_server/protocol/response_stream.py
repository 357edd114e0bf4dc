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
    reasoning_item,
    response_usage,
)

# --- the stream ------------------------------------------------------------------------------


class ResponseStream:
    """Chat completion chunks in, the Responses API's typed events out.

    One output item is open at a time: reasoning, the message, or a function call; a chunk of
    another kind closes it (its ``…done`` and ``output_item.done`` events) and opens the next.
    ``close`` ends the response (``response.completed``, or ``response.incomplete`` when the
    model ran out of tokens) and leaves its head in ``finished`` for the conversation store.
    """

    __slots__ = (
        "_arguments",
        "_call",
        "_head",
        "_item",
        "_kind",
        "_parts",
        "_sequence",
        "_tail",
        "_where",
        "finish",
        "finished",
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
        #: The open item's delta event up to its text, and from its text to its number.
        self._head = self._tail = b""
        #: The open message's place in events: ``"item_id":"msg_…","output_index":n``.
        self._where = b""
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        #: The finished response's head (ResponseShape.head), once ``close`` has ended it.
        self.finished: dict[str, Any] | None = None

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        data["type"] = kind
        data["sequence_number"] = self._next()
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _next(self) -> int:
        sequence = self._sequence
        self._sequence = sequence + 1
        return sequence

    def _start(self) -> bytes:
        self.started = True
        snapshot = self.shape.encode(self.shape.head("in_progress", [], None))
        out = self._whole(b"response.created", snapshot) + self._whole(
            b"response.in_progress", snapshot
        )
        if self.shape.search is not None:
            out += self._searched(self.shape.search.item)
        return out

    def _searched(self, item: dict[str, Any]) -> bytes:
        """The events of the file_search the platform ran before the model began: it is
        over by now, so they come at once, as the first output item."""
        index = len(self.output)
        where = {"item_id": item["id"], "output_index": index}
        opened = {**item, "status": "in_progress", "queries": [], "results": None}
        out = self._event("response.output_item.added", {"output_index": index, "item": opened})
        for step in ("in_progress", "searching", "completed"):
            out += self._event(f"response.file_search_call.{step}", dict(where))
        self.output.append(item)
        return out + self._event("response.output_item.done", {"output_index": index, "item": item})

    def _whole(self, kind: bytes, response: bytes) -> bytes:
        """An event that carries a whole Response (encoded)."""
        sequence = str(self._next()).encode()
        return (
            b"event: "
            + kind
            + b'\ndata: {"type":"'
            + kind
            + b'","sequence_number":'
            + sequence
            + b',"response":'
            + response
            + b"}\n\n"
        )

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self.started else self._start()
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0):
                continue  # a Response has one answer; n > 1 has no meaning here
            if delta := choice.get("delta"):
                if text := delta.get("reasoning_content"):
                    if self._kind != "reasoning":
                        out += self._open("reasoning")
                    out += self._delta(text)
                if text := delta.get("content"):
                    if self._kind != "message":
                        out += self._open("message")
                    out += self._delta(text)
                for call in delta.get("tool_calls") or ():
                    out += self._tool_delta(call)
            if finish := choice.get("finish_reason"):
                self.finish = finish
        return out

    def _delta(self, text: str) -> bytes:
        """A reasoning or text delta of the open item (the hot path: bytes, no dict)."""
        self._parts.append(text)
        sequence = self._sequence
        self._sequence = sequence + 1
        return self._head + orjson.dumps(text) + self._tail + b"%d}\n\n" % sequence

    def _open(self, kind: str) -> bytes:
        out = self._close_item()
        self._kind, self._parts = kind, []
        index = len(self.output)
        where = b'","output_index":' + str(index).encode() + b',"content_index":0,"delta":'
        if kind == "reasoning":
            self._item = new_id("rs")
            self._head = _head(b"response.reasoning_text.delta", self._item) + where
            self._tail = b',"sequence_number":'
            return out + self._event(
                "response.output_item.added",
                {"output_index": index, "item": reasoning_item(self._item, "", "in_progress")},
            )
        self._item = new_id("msg")
        self._head = _head(b"response.output_text.delta", self._item) + where
        self._tail = b',"logprobs":[],"sequence_number":'
        # The message's events are the ones every answer has: written as bytes, like deltas.
        at = b'"output_index":' + str(index).encode()
        self._where = b'"item_id":"' + self._item.encode() + b'",' + at
        item = b'{"id":"' + self._item.encode() + b'","type":"message","status":"in_progress"'
        return (
            out
            + self._raw(
                b"response.output_item.added",
                at + b',"item":' + item + b',"role":"assistant","content":[]}',
            )
            + self._raw(
                b"response.content_part.added",
                self._where + b',"content_index":0,"part":' + _text_part(b'""'),
            )
        )

    def _raw(self, kind: bytes, fields: bytes) -> bytes:
        """An event from its fields, already JSON (``"a":1,"b":2``)."""
        sequence = str(self._next()).encode()
        return (
            b"event: "
            + kind
            + b'\ndata: {"type":"'
            + kind
            + b'","sequence_number":'
            + sequence
            + b","
            + fields
            + b"}\n\n"
        )

    def _close_message(self) -> bytes:
        text = "".join(self._parts)
        search = self.shape.search
        cited = search.cite(text) if search is not None else []
        self.output.append(message_item(self._item, text, "completed", cited))
        encoded = orjson.dumps(text)
        part = _text_part(encoded, orjson.dumps(cited) if cited else b"[]")
        at = self._where[self._where.index(b'"output_index"') :]
        item = b'{"id":"' + self._item.encode() + b'","type":"message","status":"completed"'
        out = b""
        for number, annotation in enumerate(cited):
            out += self._raw(
                b"response.output_text.annotation.added",
                self._where
                + b',"content_index":0,"annotation_index":'
                + str(number).encode()
                + b',"annotation":'
                + orjson.dumps(annotation),
            )
        return (
            out
            + self._raw(
                b"response.output_text.done",
                self._where + b',"content_index":0,"text":' + encoded + b',"logprobs":[]',
            )
            + self._raw(
                b"response.content_part.done", self._where + b',"content_index":0,"part":' + part
            )
            + self._raw(
                b"response.output_item.done",
                at + b',"item":' + item + b',"role":"assistant","content":[' + part + b"]}",
            )
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
        if kind == "message":
            return self._close_message()
        where = {"item_id": self._item, "output_index": index}
        if kind == "reasoning":
            text = "".join(self._parts)
            item = reasoning_item(self._item, text, "completed")
            out = self._event(
                "response.reasoning_text.done", {**where, "content_index": 0, "text": text}
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
        """The events that end the response, once the upstream's stream has ended; its head
        is left in ``finished``."""
        out = b"" if self.started else self._start()
        out += self._close_item()
        incomplete = STATUS_OF_FINISH.get(self.finish or "stop")
        head = self.shape.head(
            "incomplete" if incomplete else "completed",
            self.output,
            response_usage(self.usage),
            incomplete=incomplete,
        )
        self.finished = head
        kind = b"response.incomplete" if incomplete else b"response.completed"
        return out + self._whole(kind, self.shape.encode(head))

    def fail(self, failure: HepAIError) -> bytes:
        """The events that end a response whose upstream failed mid-stream."""
        out = b"" if self.started else self._start()
        out += self._close_item()
        code, message = failure.code or failure.type, failure.message
        out += self._event("error", {"code": code, "message": message, "param": None})
        error = {"code": code, "message": message}
        head = self.shape.head("failed", self.output, response_usage(self.usage), error=error)
        return out + self._whole(b"response.failed", self.shape.encode(head))


def _head(kind: bytes, item: str) -> bytes:
    return b"event: " + kind + b'\ndata: {"type":"' + kind + b'","item_id":"' + item.encode()


def _text_part(text: bytes, annotations: bytes = b"[]") -> bytes:
    """An output_text part, its text and annotations already JSON."""
    return (
        b'{"type":"output_text","text":'
        + text
        + b',"annotations":'
        + annotations
        + b',"logprobs":[]}'
    )
