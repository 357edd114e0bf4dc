"""SSE framing: events cut at boundaries however the bytes arrive, model ids rewritten."""

from __future__ import annotations

import orjson
import pytest

from hepai_server.errors import UpstreamError
from hepai_server.gateway.proxy import Outcome, take_usage
from hepai_server.protocol import sse
from hepai_server.protocol.openai import Usage
from hepai_server.protocol.sse import (
    DONE,
    EventSplitter,
    ModelRewriter,
    error_event,
    event_bounds,
    event_data,
    rewrite_model,
    split_events,
)

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


def _upstream_stream(upstream_field: bytes) -> bytes:
    """A chat stream as OpenAI sends it, its model field spelt ``upstream_field``."""
    chunk = b'data: {"id":"c","object":"chat.completion.chunk",' + upstream_field
    return (
        chunk
        + b',"choices":[{"index":0,"delta":{"content":"model"}}],"usage":null}\n\n'
        + chunk
        + b',"choices":[{"index":0,"delta":{"content":"\\"model\\":\\"x\\""}}]}\n\n'
        + chunk
        + b',"choices":[],"usage":{"prompt_tokens":1,"total_tokens":2}}\n\n'
        + b'data: {"id":"c","model" : "other","choices":[]}\n\n'
        + chunk
        + b',"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        + DONE
    )


UPSTREAM_FIELDS = [
    b'"model":"chat-upstream"',
    b'"model": "chat-upstream"',
    b'"model" :"a.b*c$\\\\d\\"e\\u00e9"',
    b'"model":"model"',
    b'"model":""',
]
PUBLIC_IDS = ["mock/chat", 'we\\ird"id\\g<0>$1.*', "tab\there", "model"]


@pytest.mark.parametrize("upstream_field", UPSTREAM_FIELDS)
@pytest.mark.parametrize("public", PUBLIC_IDS)
@pytest.mark.parametrize("size", [1, 5, 17, 100, 10_000])
def test_stream_rewriter_gives_the_regex_result_however_the_events_arrive(
    upstream_field: bytes, public: str, size: int
) -> None:
    stream = _upstream_stream(upstream_field) * 2
    public_id = orjson.dumps(public)
    splitter, rewriter = EventSplitter(), ModelRewriter(public_id)
    out = b""
    for start in range(0, len(stream), size):
        events = splitter.feed(stream[start : start + size])
        if events:
            out += rewriter.rewrite(events)
    assert out == rewrite_model(stream, public_id)
    for event in split_events(out):
        if event != DONE:
            assert orjson.loads(event[6:])["model"] == public
    assert orjson.loads(split_events(out)[0][6:])["choices"][0]["delta"]["content"] == "model"


def test_rewrite_model_writes_ids_with_backslashes_as_they_are() -> None:
    for public in PUBLIC_IDS:
        rewritten = rewrite_model(b'{"model":"up","x":1}', orjson.dumps(public))
        assert orjson.loads(rewritten) == {"model": public, "x": 1}


def test_rewriter_leaves_events_without_a_model_alone() -> None:
    events = b'data: {"id":"1","choices":[]}\n\n'
    assert ModelRewriter(b'"p"').rewrite(events) is events


def _take_usage_by_splitting(events: bytes, outcome: Outcome, *, keep: bool) -> bytes:
    """take_usage as it was: every event split out, each one naming usage parsed."""
    kept = []
    for event in split_events(events):
        if b'"usage"' in event:
            try:
                chunk = orjson.loads(event_data(event) or b"")
            except orjson.JSONDecodeError:
                chunk = None
            if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                outcome.usage = Usage.from_block(chunk["usage"])
                if not keep and not chunk.get("choices"):
                    continue
        kept.append(event)
    return b"".join(kept)


USAGE = b'"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}'
USAGE_BATCHES = [
    b'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}\n\n',
    b'data: {"choices":[{"delta":{"content":"usage"}}],"usage" : null}\n\n',
    b'data: {"choices":[],' + USAGE + b"}\n\n",
    b'data: {"choices":[],' + USAGE + b"}\n\n" + DONE,
    b'data: {"choices":[{"delta":{}}],"usage":null}\n\ndata: {"choices":[],' + USAGE + b"}\n\n",
    b'data: {"choices":[{"delta":{}}],' + USAGE + b"}\n\n" + DONE,
    b'event: x\ndata: {"choices":[],' + USAGE + b'}\n\ndata: {"usage":[]}\n\n',
    b'data: {"choices":[],"usage":{"total_tokens":1}}\n\ndata: {"choices":[],' + USAGE + b"}\n\n",
    b'data: {"usage":{broken\n\ndata: {"usage":"text"}\n\n',
    b'data: {"delta":"\\"usage\\":{}"}\n\n',
]


@pytest.mark.parametrize("events", USAGE_BATCHES)
@pytest.mark.parametrize("keep", [True, False])
def test_take_usage_finds_the_usage_event_in_place(events: bytes, keep: bool) -> None:
    found, expected = Outcome(), Outcome()
    assert take_usage(events, found, keep=keep) == _take_usage_by_splitting(
        events, expected, keep=keep
    )
    assert found.usage == expected.usage


def test_take_usage_drops_only_the_usage_only_event() -> None:
    outcome = Outcome()
    events = (
        b'data: {"choices":[{"delta":{}}],"usage":null}\n\n'
        + b'data: {"choices":[],'
        + USAGE
        + b"}\n\n"
        + DONE
    )
    kept = take_usage(events, outcome, keep=False)
    assert kept == b'data: {"choices":[{"delta":{}}],"usage":null}\n\n' + DONE
    assert outcome.usage == Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)


def test_event_bounds() -> None:
    events = b"data: 1\n\nevent: e\ndata: 2\n\ndata: 3\n\n"
    assert events[slice(*event_bounds(events, 0))] == b"data: 1\n\n"
    assert events[slice(*event_bounds(events, events.index(b"2")))] == b"event: e\ndata: 2\n\n"
    assert events[slice(*event_bounds(events, events.index(b"3")))] == b"data: 3\n\n"


def test_rewriter_needs_the_regex_only_for_the_first_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chunk = b'data: {"id":"c","model":"up","choices":[{"delta":{"content":"x"}}]}\n\n'
    rewriter = ModelRewriter(b'"public"')
    assert rewriter.rewrite(chunk) == chunk.replace(b'"up"', b'"public"')

    class NoRegex:
        def __getattr__(self, name: str) -> None:
            raise AssertionError(f"the regex ran ({name})")

    monkeypatch.setattr(sse, "_MODEL_FIELD", NoRegex())
    assert rewriter.rewrite(chunk * 3) == chunk.replace(b'"up"', b'"public"') * 3
