"""file_search in the Responses API, in process, through the official openai client: the
platform searches a vector store built here from real documents, reports the search as a
``file_search_call`` item (its results only when ``include`` asks), cites the sources the answer
uses, streams OpenAI's typed events for it, and searches only stores the caller may read."""

from __future__ import annotations

import io
from typing import Any

import openai
import pytest
from openai.types.responses import Response

from hepai_server.knowledge import stores
from hepai_server.services.accounts import Caller
from tests.inprocess import Account, App, Upstream

QUESTION = "How was the calorimeter calibrated?"
REPLY = "They used cosmic muons [1]."
REPORT = """# Quarterly Detector Report

## Calibration Results

The calorimeter was calibrated with cosmic muons collected during the March shutdown; the
gain of every ECAL channel is within two per cent of its reference.

## Beam Monitor

The beam monitor scan of run 1201 found the beam centred within 0.2 mm.
"""
MINUTES = """# Collaboration Meeting Minutes

The trigger group reported a faster level-one trigger. The next meeting is in April.
"""


@pytest.fixture(scope="module")
async def knowledge(app: App, account: Account) -> dict[str, str]:
    """The account's store of two markdown documents, each with a ``kind`` attribute."""
    async with app.openai(account.key) as client:
        store = await client.vector_stores.create(name="detector notes")
        found = {"store": store.id}
        documents = (("report.md", REPORT, "report"), ("minutes.md", MINUTES, "minutes"))
        for name, text, kind in documents:
            upload = await client.files.create(
                file=(name, io.BytesIO(text.encode())), purpose="assistants"
            )
            attached = await client.vector_stores.files.create_and_poll(
                vector_store_id=store.id,
                file_id=upload.id,
                attributes={"kind": kind},
                poll_interval_ms=50,
            )
            assert attached.status == "completed", attached.last_error
            found[kind] = upload.id
        return found


def file_search(knowledge: dict[str, str], **options: Any) -> list[Any]:
    return [{"type": "file_search", "vector_store_ids": [knowledge["store"]], **options}]


async def test_a_response_reports_the_search_and_cites_its_sources(
    app: App, api: openai.AsyncOpenAI, upstream: Upstream, knowledge: dict[str, str], unique
) -> None:
    marker = unique("search")
    raw = await api.responses.with_raw_response.create(
        model="mock/chat",
        input=QUESTION,
        tools=file_search(knowledge, filters={"type": "eq", "key": "kind", "value": "report"}),
        extra_body={"mock": {"reply": REPLY, "tag": marker}},
        extra_headers={"x-request-id": marker},
    )
    response = Response.model_validate(raw.http_response.json())  # OpenAI's types, validated
    search, message = response.output
    assert search.type == "file_search_call" and search.id.startswith("fs_")
    assert search.status == "completed" and search.queries == [QUESTION]
    assert search.results is None  # not asked for with include
    assert message.type == "message" and response.output_text == REPLY
    [citation] = message.content[0].annotations  # type: ignore[union-attr]
    assert citation.type == "file_citation" and citation.file_id == knowledge["report"]
    assert citation.filename == "report.md" and citation.index == REPLY.index("[1]")

    [sent] = [r for r in upstream.requests() if r["body"].get("mock", {}).get("tag") == marker]
    assert sent["path"] == "/v1/chat/completions" and "tools" not in sent["body"]
    system, user = sent["body"]["messages"]
    assert system["role"] == "system" and "[1] (report.md" in system["content"]
    assert "cosmic muons" in system["content"] and "Meeting" not in system["content"]
    assert user == {"role": "user", "content": QUESTION}

    row = await app.platform.usage_row(marker)
    assert row["endpoint"] == "responses" and row["status_code"] == 200
    searches = await app.platform.usage_rows(row["request_id"])
    assert [r["endpoint"] for r in searches if r["request_id"] != row["request_id"]] == [
        "vector_stores.search"
    ]


async def test_results_come_only_when_included(
    api: openai.AsyncOpenAI, knowledge: dict[str, str]
) -> None:
    response = await api.responses.create(
        model="mock/chat",
        input=QUESTION,
        tools=file_search(knowledge, max_num_results=1),
        include=["file_search_call.results"],
        extra_body={"mock": {"reply": REPLY}},
    )
    search = response.output[0]
    assert search.type == "file_search_call" and search.results is not None
    [result] = search.results
    assert result.file_id == knowledge["report"] and result.filename == "report.md"
    assert result.text is not None and "cosmic muons" in result.text
    assert result.attributes == {"kind": "report"} and result.score is not None


async def test_a_stream_has_the_search_events_and_the_annotations(
    api: openai.AsyncOpenAI, knowledge: dict[str, str]
) -> None:
    async with api.responses.stream(
        model="mock/chat",
        input=QUESTION,
        tools=file_search(knowledge),
        extra_body={"mock": {"reply": REPLY}},
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    kinds = [event.type for event in events]
    words = len(REPLY.split(" "))
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * words,
        "response.output_text.annotation.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    opened, done = events[2], events[6]
    assert opened.type == "response.output_item.added" and opened.output_index == 0
    assert opened.item.type == "file_search_call" and opened.item.status == "in_progress"
    assert done.type == "response.output_item.done" and done.item.status == "completed"
    assert done.item.queries == [QUESTION] and done.item.results is None
    assert {e.item_id for e in events[3:6]} == {opened.item.id}  # type: ignore[union-attr]
    added = events[9 + words]
    assert added.type == "response.output_text.annotation.added"
    assert added.output_index == 1 and added.annotation_index == 0
    assert added.annotation == {
        "type": "file_citation",
        "file_id": knowledge["report"],
        "filename": "report.md",
        "index": REPLY.index("[1]"),
    }
    assert [item.type for item in final.output] == ["file_search_call", "message"]
    message = final.output[1]
    assert message.type == "message"
    [citation] = message.content[0].annotations  # type: ignore[union-attr]
    assert citation.file_id == knowledge["report"]


async def test_someone_elses_store_is_not_found(
    app: App, make_user, knowledge: dict[str, str]
) -> None:
    async with app.openai(make_user().key) as other:
        with pytest.raises(openai.NotFoundError):
            await other.responses.create(
                model="mock/chat", input=QUESTION, tools=file_search(knowledge)
            )
        with pytest.raises(openai.NotFoundError):
            async with other.responses.stream(
                model="mock/chat", input=QUESTION, tools=file_search(knowledge)
            ) as stream:
                [event async for event in stream]


async def test_a_searched_conversation_continues(
    api: openai.AsyncOpenAI, upstream: Upstream, knowledge: dict[str, str], unique
) -> None:
    first = await api.responses.create(
        model="mock/chat",
        input=QUESTION,
        tools=file_search(knowledge),
        extra_body={"mock": {"reply": REPLY}},
    )
    follow = unique("follow")
    second = await api.responses.create(
        model="mock/chat", previous_response_id=first.id, input=follow
    )
    assert second.output_text and [item.type for item in second.output] == ["message"]
    [sent] = [r for r in upstream.requests() if follow in str(r["body"])]
    assert sent["body"]["messages"] == [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": REPLY},
        {"role": "user", "content": follow},
    ]


async def test_a_native_model_is_translated_to_search_the_platforms_stores(
    api: openai.AsyncOpenAI, upstream: Upstream, knowledge: dict[str, str], unique
) -> None:
    marker = unique("native")
    response = await api.responses.create(
        model="native/responses",
        input=f"{QUESTION} {marker}",
        tools=file_search(knowledge),
        extra_body={"mock": {"reply": REPLY}},
    )
    assert [item.type for item in response.output] == ["file_search_call", "message"]
    sent = [r for r in upstream.requests() if marker in str(r["body"])][-1]
    assert sent["path"] == "/v1/chat/completions"


async def test_a_forced_file_search_leaves_function_tools_to_the_model(
    api: openai.AsyncOpenAI, upstream: Upstream, knowledge: dict[str, str], unique
) -> None:
    marker = unique("forced")
    function: Any = {"type": "function", "name": "get_weather", "parameters": {}}
    response = await api.responses.create(
        model="mock/chat",
        input=f"{QUESTION} {marker}",
        tools=[*file_search(knowledge), function],
        tool_choice={"type": "file_search"},
        extra_body={"mock": {"reply": REPLY}},
    )
    assert response.output[0].type == "file_search_call"
    sent = [r for r in upstream.requests() if marker in str(r["body"])][-1]["body"]
    assert sent["tool_choice"] == "auto"
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["get_weather"]


async def test_a_search_with_nothing_to_search_for_names_the_input(
    api: openai.AsyncOpenAI, knowledge: dict[str, str]
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await api.responses.create(
            model="mock/chat",
            input=[{"role": "developer", "content": "answer from the notes"}],
            tools=file_search(knowledge),
        )
    assert raised.value.param == "input"


@pytest.mark.parametrize(
    "tools",
    [
        [{"type": "file_search"}],
        [{"type": "file_search", "vector_store_ids": []}],
        [
            {"type": "file_search", "vector_store_ids": ["vs_a"]},
            {"type": "file_search", "vector_store_ids": ["vs_b"]},
        ],
        [
            {
                "type": "file_search",
                "vector_store_ids": ["vs_a"],
                "ranking_options": {"score_threshold": "abc"},
            }
        ],
        [
            {
                "type": "file_search",
                "vector_store_ids": ["vs_a"],
                "ranking_options": {"score_threshold": 2},
            }
        ],
    ],
)
async def test_a_file_search_without_one_list_of_stores_or_a_sane_threshold_is_400(
    api: openai.AsyncOpenAI, tools: list[Any]
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await api.responses.create(model="mock/chat", input=QUESTION, tools=tools)
    assert raised.value.param == "tools"


async def test_only_stores_the_caller_may_read_size_its_reservation(
    app: App, account: Account, make_user, knowledge: dict[str, str]
) -> None:
    """A file_search reserves room for passages as long as its stores' chunks: the owner's
    store counts (800-token chunks by default); to another user the same id counts nothing,
    so the amount reserved tells them nothing of a store they may not read."""
    other = make_user()

    def caller(who: Account) -> Caller:
        return Caller(who.key_id, who.user_id, who.username, None, False, frozenset(), None, None)

    with app.platform.session() as session:
        ids = [knowledge["store"], "vs_missing"]
        assert stores.longest_chunk(session, caller(account), ids) == 800
        assert stores.longest_chunk(session, caller(other), ids) == 0
