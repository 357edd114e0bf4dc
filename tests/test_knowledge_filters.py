"""Attribute filters, listing pages and citation markers: the pure parts of the knowledge
service and its chat hook."""

from __future__ import annotations

import pytest

from hepai_server.errors import InvalidRequest
from hepai_server.gateway.file_search import Sources, take_tool
from hepai_server.knowledge.filters import check_filter, matches
from hepai_server.knowledge.service import paginate
from hepai_server.protocol.vector_stores import SearchHit

ATTRIBUTES = {"year": 2024, "kind": "paper", "public": True}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"type": "eq", "key": "kind", "value": "paper"}, True),
        ({"type": "ne", "key": "kind", "value": "paper"}, False),
        ({"type": "gt", "key": "year", "value": 2023}, True),
        ({"type": "lte", "key": "year", "value": 2023}, False),
        ({"type": "in", "key": "kind", "value": ["paper", "note"]}, True),
        ({"type": "nin", "key": "kind", "value": ["paper"]}, False),
        ({"type": "eq", "key": "missing", "value": 1}, False),
        ({"type": "ne", "key": "missing", "value": 1}, True),
        ({"type": "gt", "key": "kind", "value": 3}, False),  # no order between str and int
        ({"type": "gt", "key": "public", "value": 0}, False),  # nor for booleans
        (
            {
                "type": "and",
                "filters": [
                    {"type": "eq", "key": "public", "value": True},
                    {
                        "type": "or",
                        "filters": [
                            {"type": "eq", "key": "year", "value": 1999},
                            {"type": "eq", "key": "kind", "value": "paper"},
                        ],
                    },
                ],
            },
            True,
        ),
    ],
)
def test_filters_match_as_openai_defines_them(condition: dict, expected: bool) -> None:
    assert matches(check_filter(condition), ATTRIBUTES) is expected


@pytest.mark.parametrize(
    "condition",
    [
        "year > 2000",
        {"type": "like", "key": "kind", "value": "p%"},
        {"type": "eq", "value": 1},
        {"type": "in", "key": "kind", "value": "paper"},
        {"type": "eq", "key": "kind", "value": {"nested": 1}},
        {"type": "and", "filters": []},
    ],
)
def test_malformed_filters_are_400(condition: object) -> None:
    with pytest.raises(InvalidRequest):
        check_filter(condition)


def test_pages_follow_the_cursor_both_ways() -> None:
    ids = [f"vs_{i}" for i in range(7)]
    assert paginate(ids, ids, 3, None, None) == (ids[:3], True)
    assert paginate(ids, ids, 3, "vs_2", None) == (ids[3:6], True)
    assert paginate(ids, ids, 3, "vs_5", None) == (ids[6:], False)
    assert paginate(ids, ids, 3, None, "vs_5") == (ids[2:5], True)
    with pytest.raises(InvalidRequest):
        paginate(ids, ids, 3, "vs_unknown", None)


def hit(number: int) -> SearchHit:
    return SearchHit(
        file_id=f"file-{number}",
        filename=f"doc{number}.pdf",
        score=0.5,
        text=f"passage {number}",
        attributes={},
        page=number,
        heading="Results",
        store_id="vs_1",
    )


def test_markers_become_citations_of_the_passages_given() -> None:
    sources = Sources([hit(1), hit(2)])
    prompt = sources.prompt()
    assert "[1] (doc1.pdf, page 1, Results)\npassage 1" in prompt
    text = "Muons decay [2], as measured [1][7]."
    notes = sources.annotations(text)
    assert [(n["text"], n["file_citation"]["file_id"]) for n in notes] == [
        ("[2]", "file-2"),
        ("[1]", "file-1"),
    ]
    assert all(text[n["start_index"] : n["end_index"]] == n["text"] for n in notes)


def test_the_file_search_tool_is_taken_out_of_the_request() -> None:
    body = {
        "tools": [
            {"type": "file_search", "vector_store_ids": ["vs_1"]},
            {"type": "function", "function": {"name": "f"}},
        ]
    }
    assert take_tool(body) == {"type": "file_search", "vector_store_ids": ["vs_1"]}
    assert body["tools"] == [{"type": "function", "function": {"name": "f"}}]
    alone = {
        "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}],
        "tool_choice": "auto",
    }
    take_tool(alone)
    assert "tools" not in alone and "tool_choice" not in alone
    assert take_tool({"tools": [{"type": "function"}]}) is None
    with pytest.raises(InvalidRequest):
        take_tool({"tools": [{"type": "file_search"}]})
