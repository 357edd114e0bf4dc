"""Server-sent events as OpenAI streams them: framing, the usage chunk, the in-stream error."""

from __future__ import annotations

import re

import orjson

from hepai_server.errors import HepAIError

DONE = b"data: [DONE]\n\n"
_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


def rewrite_model(payload: bytes, public_id: bytes) -> bytes:
    """Every ``"model": "…"`` field in a JSON payload or run of events names ``public_id``.

    Quotes inside JSON strings are escaped, so the pattern matches keys only; the bytes around
    each match are left exactly as the upstream sent them.
    """
    return _MODEL_FIELD.sub(b'"model":' + public_id, payload)


def error_event(error: HepAIError) -> bytes:
    """The event that ends a stream whose upstream failed after it started: no [DONE] follows."""
    return b"data: " + orjson.dumps({"error": error.to_body()["error"]}) + b"\n\n"


class EventSplitter:
    """Cuts an upstream byte stream at event boundaries, normalising CRLF to LF."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The complete events so far (possibly none); the rest waits for the next chunk.

        A CR that ends a chunk stays pending until the LF after it arrives.
        """
        data = self._pending + chunk if self._pending else chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        end = data.rfind(b"\n\n")
        if end < 0:
            self._pending = data
            return b""
        self._pending = data[end + 2 :]
        return data[: end + 2]

    def rest(self) -> bytes:
        """What the upstream sent after its last complete event."""
        rest, self._pending = self._pending, b""
        return rest


def split_events(events: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in events.split(b"\n\n") if event]


def event_data(event: bytes) -> bytes | None:
    """The payload of a ``data:`` event (single-line data, as OpenAI sends)."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:].strip()
    return None
