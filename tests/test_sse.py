"""SSE framing: events cut at boundaries however the bytes arrive, model ids rewritten."""

from __future__ import annotations

import orjson
import pytest

from hepai_server.errors import UpstreamError
from hepai_server.protocol.sse import EventSplitter, error_event, rewrite_model, split_events

STREAM = (
    b'data: {"id":"1","model":"up","choices":[{"delta":{"content":"a \\"model\\": \\"x\\""}}]}\n\n'
    b'data: {"id":"2","model": "up","choices":[]}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_splitter_yields_whole_events_for_any_chunking(size: int, newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    splitter = EventSplitter()
    out = []
    for start in range(0, len(stream), size):
        events = splitter.feed(stream[start : start + size])
        if events:
            assert events.endswith(b"\n\n")
            out.append(events)
    assert splitter.rest() == b""
    assert b"".join(out) == STREAM


def test_splitter_keeps_an_unfinished_tail() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: 1\n\ndata: 2") == b"data: 1\n\n"
    assert splitter.rest() == b"data: 2"


def test_rewrite_model_changes_keys_only() -> None:
    rewritten = rewrite_model(STREAM, b'"public/id:1"')
    events = split_events(rewritten)
    first = orjson.loads(events[0][6:])
    assert first["model"] == "public/id:1"
    assert first["choices"][0]["delta"]["content"] == 'a "model": "x"'
    assert orjson.loads(events[1][6:])["model"] == "public/id:1"
    assert events[2] == b"data: [DONE]\n\n"


def test_error_event_is_one_data_line_with_openai_error() -> None:
    event = error_event(UpstreamError("it broke"))
    assert event.startswith(b"data: ") and event.endswith(b"\n\n") and event.count(b"\n") == 2
    assert orjson.loads(event[6:])["error"] == {
        "message": "it broke",
        "type": "upstream_error",
        "param": None,
        "code": None,
    }
