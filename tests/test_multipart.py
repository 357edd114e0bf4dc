"""Rebuilding the hepai SDK's flattened multipart fields into args and kwargs."""

from __future__ import annotations

import io

import orjson
import pytest

from hepai_server.errors import InvalidRequest
from hepai_server.gateway.multipart import place, write_body


def rebuild(fields: list[tuple[str, str]]) -> dict:
    payload: dict = {"args": [], "kwargs": {}}
    for key, value in fields:
        place(payload, key, value)
    return payload


def test_bracket_keys_nest_back() -> None:
    payload = rebuild(
        [
            ("args[]", "1"),
            ("args[]", "two"),
            ("kwargs[name]", "x"),
            ("kwargs[tags][]", "a"),
            ("kwargs[tags][]", "b"),
            ("kwargs[opts][depth]", "2"),
            ("kwargs[opts][mode]", "fast"),
        ]
    )
    assert payload == {
        "args": ["1", "two"],
        "kwargs": {"name": "x", "tags": ["a", "b"], "opts": {"depth": "2", "mode": "fast"}},
    }


@pytest.mark.parametrize("key", ["file_name", "args", "kwargs[a]]", "other[x]", "args[x]"])
def test_unexpected_fields_are_a_400(key: str) -> None:
    with pytest.raises(InvalidRequest):
        rebuild([(key, "v")])


def test_body_without_files_is_plain_json() -> None:
    sink = io.BytesIO()
    write_body(sink, {"args": [1], "kwargs": {"a": "b"}}, [])
    assert orjson.loads(sink.getvalue()) == {"args": [1], "kwargs": {"a": "b"}}
