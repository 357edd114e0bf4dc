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
    incomplete_json,
    message_item,
    new_id,
    reasoning_item,
    response_usage,
    text_message_json,
    usage_json,
)

# --- the stream ------------------------------------------------------------------------------


class ResponseStream:
    """Chat completion chunks in, the Responses API's typed events out.

    One output item is open at a time: reasoning, the message, or a function call; a chunk of
    another kind closes it (its ``…done`` and ``output_item.done`` events) and opens the next.
    ``close`` ends the response (``response.completed``, or ``response.incomplete`` when the
    model ran out of tokens); ``finished`` is then its head, for the conversation store.

    The events every answer has (the Response's first and last, a message's, each delta) are
    written from templates as bytes: a stream's cost is mostly theirs. Each output item is
    kept twice, as the dict the stored Response lists and as the JSON its ``output_item.done``
    event carried, which the last event's Response lists again without encoding it twice.
    """

    __slots__ = (
        "_arguments",
        "_call",
        "_delta_event",
        "_ended",
        "_finished",
        "_item",
        "_kind",
        "_parts",
        "_sequence",
        "encoded",
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
        #: The closed output items, as dicts and as JSON.
        self.output: list[dict[str, Any]] = []
        self.encoded: list[bytes] = []
        #: The open item: "reasoning", "message" or "tool:<chat tool index>", and its id.
        self._kind: str | None = None
        self._item = ""
        self._parts: list[str] = []
        self._call: tuple[str, str] = ("", "")  # call id, name
        self._arguments: list[str] = []
        #: The open item's delta event, a template of its text's JSON and its number.
        self._delta_event = b""
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        #: How ``close`` ended the response (its incomplete reason, or ""), and its head.
        self._ended: str | None = None
        self._finished: dict[str, Any] | None = None

    @property
    def finished(self) -> dict[str, Any] | None:
        """The finished response's head (ResponseShape.head), once ``close`` has ended it."""
        if self._ended is None:
            return None
        if self._finished is None:
            incomplete = self._ended or None
            self._finished = self.shape.head(
                "incomplete" if incomplete else "completed",
                self.output,
                response_usage(self.usage),
                incomplete=incomplete,
            )
        return self._finished

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
        snapshot = self.shape.write(b"in_progress", b"", b"null")
        out = _CREATED % (0, snapshot) + _IN_PROGRESS % (1, snapshot)
        self._sequence = 2
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
        return out + self._done(item, orjson.dumps(item))

    def _done(self, item: dict[str, Any], encoded: bytes) -> bytes:
        """The ``output_item.done`` event of a closed item, which joins the output."""
        index = len(self.output)
        self.output.append(item)
        self.encoded.append(encoded)
        return _ITEM_DONE % (self._next(), index, encoded)

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
        return self._delta_event % (orjson.dumps(text), sequence)

    def _open(self, kind: str) -> bytes:
        out = self._close_item()
        self._kind, self._parts = kind, []
        index = len(self.output)
        if kind == "reasoning":
            self._item = new_id("rs")
            self._delta_event = _REASONING_DELTA % (self._item.encode(), index)
            return out + self._event(
                "response.output_item.added",
                {"output_index": index, "item": reasoning_item(self._item, "", "in_progress")},
            )
        self._item = item = new_id("msg")
        encoded = item.encode()
        self._delta_event = _TEXT_DELTA % (encoded, index)
        sequence = self._sequence
        self._sequence = sequence + 2
        return (
            out
            + _MESSAGE_ADDED % (sequence, index, encoded)
            + _PART_ADDED % (sequence + 1, encoded, index)
        )

    def _close_message(self) -> bytes:
        text = "".join(self._parts)
        search = self.shape.search
        cited = search.cite(text) if search is not None else []
        item, index = self._item.encode(), len(self.output)
        encoded = orjson.dumps(text)
        annotations = orjson.dumps(cited) if cited else b"[]"
        out = b""
        for number, annotation in enumerate(cited):
            out += _ANNOTATION_ADDED % (
                self._next(),
                item,
                index,
                number,
                orjson.dumps(annotation),
            )
        sequence = self._sequence
        self._sequence = sequence + 2
        return (
            out
            + _TEXT_DONE % (sequence, item, index, encoded)
            + _PART_DONE % (sequence + 1, item, index, encoded, annotations)
            + self._done(
                message_item(self._item, text, "completed", cited),
                text_message_json(self._item, encoded, annotations),
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
        return out + self._done(item, orjson.dumps(item))

    def close(self) -> bytes:
        """The events that end the response, once the upstream's stream has ended; its head
        is then ``finished``."""
        out = b"" if self.started else self._start()
        out += self._close_item()
        incomplete = STATUS_OF_FINISH.get(self.finish or "stop")
        self._ended = incomplete or ""
        response = self.shape.write(
            b"incomplete" if incomplete else b"completed",
            b",".join(self.encoded),
            usage_json(self.usage),
            incomplete_json(incomplete),
        )
        return out + (_INCOMPLETE if incomplete else _COMPLETED) % (self._next(), response)

    def fail(self, failure: HepAIError) -> bytes:
        """The events that end a response whose upstream failed mid-stream."""
        out = b"" if self.started else self._start()
        out += self._close_item()
        code, message = failure.code or failure.type, failure.message
        out += self._event("error", {"code": code, "message": message, "param": None})
        # A Response's error.code is one of OpenAI's own (the openai client's type refuses
        # any other); the error event above keeps the platform's.
        reported = "rate_limit_exceeded" if failure.status == 429 else "server_error"
        response = self.shape.write(
            b"failed",
            b",".join(self.encoded),
            usage_json(self.usage),
            error=orjson.dumps({"code": reported, "message": message}),
        )
        return out + _FAILED % (self._next(), response)


def _event(kind: bytes, fields: bytes) -> bytes:
    """The template of an event: its kind, then ``%d`` for its number, then its ``fields``
    (JSON members, with their own ``%`` placeholders)."""
    return (
        b"event: "
        + kind
        + b'\ndata: {"type":"'
        + kind
        + b'","sequence_number":%d,'
        + fields
        + b"}\n\n"
    )


def _delta(kind: bytes, tail: bytes) -> bytes:
    """The template of an item's delta event, for ``%`` with its item id and output index;
    what that gives is the template of each delta, for its text's JSON and its number (item
    ids are letters, digits and "_": nothing in them is a placeholder)."""
    return (
        b"event: "
        + kind
        + b'\ndata: {"type":"'
        + kind
        + b'","item_id":"%s","output_index":%d,"content_index":0,"delta":%%s'
        + tail
        + b',"sequence_number":%%d}\n\n'
    )


_CREATED = _event(b"response.created", b'"response":%s')
_IN_PROGRESS = _event(b"response.in_progress", b'"response":%s')
_COMPLETED = _event(b"response.completed", b'"response":%s')
_INCOMPLETE = _event(b"response.incomplete", b'"response":%s')
_FAILED = _event(b"response.failed", b'"response":%s')
_ITEM_DONE = _event(b"response.output_item.done", b'"output_index":%d,"item":%s')
_MESSAGE_ADDED = _event(
    b"response.output_item.added",
    b'"output_index":%d,"item":{"id":"%s","type":"message","status":"in_progress",'
    b'"role":"assistant","content":[]}',
)
_PART_ADDED = _event(
    b"response.content_part.added",
    b'"item_id":"%s","output_index":%d,"content_index":0,'
    b'"part":{"type":"output_text","text":"","annotations":[],"logprobs":[]}',
)
_TEXT_DONE = _event(
    b"response.output_text.done",
    b'"item_id":"%s","output_index":%d,"content_index":0,"text":%s,"logprobs":[]',
)
_PART_DONE = _event(
    b"response.content_part.done",
    b'"item_id":"%s","output_index":%d,"content_index":0,'
    b'"part":{"type":"output_text","text":%s,"annotations":%s,"logprobs":[]}',
)
_ANNOTATION_ADDED = _event(
    b"response.output_text.annotation.added",
    b'"item_id":"%s","output_index":%d,"content_index":0,"annotation_index":%d,"annotation":%s',
)
_TEXT_DELTA = _delta(b"response.output_text.delta", b',"logprobs":[]')
_REASONING_DELTA = _delta(b"response.reasoning_text.delta", b"")
