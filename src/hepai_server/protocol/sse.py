"""Server-sent events as OpenAI streams them: framing, the usage chunk, the in-stream error."""

from __future__ import annotations

import re

import orjson

from hepai_server.errors import HepAIError

DONE = b"data: [DONE]\n\n"
_MODEL_KEY = b'"model"'
_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


def rewrite_model(payload: bytes, public_id: bytes) -> bytes:
    """Every ``"model": "…"`` field in a JSON payload or run of events names ``public_id``.

    Quotes inside JSON strings are escaped, so the pattern matches keys only; the bytes around
    each match are left exactly as the upstream sent them.
    """
    return _MODEL_FIELD.sub(_literal(b'"model":' + public_id), payload)


def _literal(replacement: bytes) -> bytes:
    """``replacement`` as a re.sub template that means itself.

    re.sub reads backslashes in its template as escapes (``\\n``, ``\\g<0>``), and a JSON-encoded
    model id holds one for every quote, backslash or control character in the id.
    """
    return replacement.replace(b"\\", b"\\\\")


class ModelRewriter:
    """rewrite_model for the batches of one stream, mostly without the regex.

    An upstream spells its model field the same way in every chunk, so the regex's first match
    is kept, byte for byte. A batch in which each ``"model"`` starts a copy of that field gets
    exactly the regex's result from a plain bytes.replace: the field is a whole match holding
    ``"model"`` once, so the regex would match at each copy, and only there, and replace just
    that. Any other batch (another spelling, ``"model"`` as a string value) takes the regex.
    """

    __slots__ = ("_field", "_seen", "_template")

    def __init__(self, public_id: bytes) -> None:
        self._field = b'"model":' + public_id
        self._template = _literal(self._field)
        self._seen: bytes | None = None

    def rewrite(self, events: bytes) -> bytes:
        keys = events.count(_MODEL_KEY)
        if not keys:
            return events
        seen = self._seen
        if seen is not None and events.count(seen) == keys:
            return events.replace(seen, self._field)
        first = _MODEL_FIELD.search(events)
        # An upstream id of "model" puts the key twice in its field, which defeats the count.
        if first is not None and first.group().count(_MODEL_KEY) == 1:
            self._seen = first.group()
        return _MODEL_FIELD.sub(self._template, events)


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


def event_bounds(events: bytes, at: int) -> tuple[int, int]:
    """Where the event holding byte ``at`` of a run of events starts and ends (after its blank
    line), found without cutting up the events around it."""
    start = events.rfind(b"\n\n", 0, at)
    end = events.find(b"\n\n", at)
    return (0 if start < 0 else start + 2), (len(events) if end < 0 else end + 2)


def split_events(events: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in events.split(b"\n\n") if event]


def event_data(event: bytes) -> bytes | None:
    """The payload of a ``data:`` event (single-line data, as OpenAI sends)."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:].strip()
    return None
