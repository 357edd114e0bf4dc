"""Knowledge bases end to end, with the real openai client against a served platform whose
document tools and embedding model run as real workers: on the embedded default (SQLite) and
on PostgreSQL with pgvector (the pgserver wheel), with procrastinate running the jobs."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

from tests import documents
from tests.pgvector_server import pgvector_postgres
from tests.stack import MockProcess, Platform, Server, run_worker

pytestmark = pytest.mark.e2e

#: Workers load torch, markitdown and docvortex at start.
STARTUP = 180
SCAN_LINES = ["探测器刻度使用宇宙线缪子", "Beam monitor scan of run 1201"]


@dataclass
class Stack:
    platform: Platform
    server: Server
    owner: str
    other: str
    other_name: str


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("pgvector", marks=pytest.mark.postgres)]
)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, providers_file: Path
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp(f"kb-{request.param}")
    database = pgvector_postgres() if request.param == "pgvector" else nullcontext(None)
    with database as database_url:
        platform = Platform(
            data_dir=data_dir,
            database_url=database_url,
            config=providers_file,
            extra_env={
                "HEPAI_SERVER_KNOWLEDGE_STORE": request.param,
                "HEPAI_SERVER_JOB_RECOVERY_SECONDS": "2",
            },
        )
        platform.cli("db", "upgrade")
        operator = platform.create_user("kb-operator", "--admin")
        owner = platform.create_user("kb-owner", "--group", "physics")
        other_name = f"kb-other-{secrets.token_hex(2)}"
        other = platform.create_user(other_name, "--group", "chemistry")
        with platform.serve() as server, workers(server, operator):
            yield Stack(platform, server, owner, other, other_name)


@contextmanager
def workers(server: Server, operator: str) -> Iterator[None]:
    """The tools and the model ingestion uses, as the built-in workers serve them."""
    with (
        run_worker(server, operator, "builtin:embeddings", timeout=STARTUP),
        run_worker(server, operator, "builtin:markitdown", timeout=STARTUP),
        run_worker(server, operator, "builtin:mineru", timeout=STARTUP),
    ):
        yield


def upload(client: openai.OpenAI, name: str, data: bytes) -> str:
    return client.files.create(file=(name, io.BytesIO(data)), purpose="assistants").id


def texts(page: Any) -> list[str]:
    return [hit.content[0].text for hit in page.data]


@pytest.fixture(scope="module")
def knowledge(stack: Stack) -> dict[str, Any]:
    """A store of the owner's with a DOCX, a two-column PDF and a scanned image, completed."""
    client = stack.server.openai(stack.owner)
    store = client.vector_stores.create(name="detector notes", metadata={"team": "calorimetry"})
    files = {
        "docx": upload(client, "report.docx", documents.docx()),
        "pdf": upload(client, "paper.pdf", documents.two_column_pdf()),
        "scan": upload(
            client, "scan.png", documents.text_image(SCAN_LINES, font=documents.CJK_FONT)
        ),
    }
    for kind, file_id in files.items():
        attached = client.vector_stores.files.create_and_poll(
            vector_store_id=store.id,
            file_id=file_id,
            attributes={"kind": kind, "year": 2026 if kind == "pdf" else 2025},
            poll_interval_ms=200,
        )
        assert attached.status == "completed", attached.last_error
    return {"store": store.id, "files": files}


def test_a_store_of_three_documents_completes(stack: Stack, knowledge: dict[str, Any]) -> None:
    client = stack.server.openai(stack.owner)
    store = client.vector_stores.retrieve(knowledge["store"])
    assert store.status == "completed"
    assert store.file_counts.completed == store.file_counts.total == 3
    assert store.usage_bytes > 0 and store.metadata == {"team": "calorimetry"}
    listed = client.vector_stores.files.list(vector_store_id=store.id)
    assert {f.id for f in listed.data} == set(knowledge["files"].values())
    assert all(f.usage_bytes > 0 and f.chunking_strategy is not None for f in listed.data)
    assert knowledge["store"] in {s.id for s in client.vector_stores.list().data}
    content = client.vector_stores.files.content(
        file_id=knowledge["files"]["docx"], vector_store_id=store.id
    )
    assert any("| HCAL-7 | 0.97 | noisy |" in part.text for part in content)


def test_search_in_english_cites_file_page_and_heading(
    stack: Stack, knowledge: dict[str, Any]
) -> None:
    client = stack.server.openai(stack.owner)
    page = client.vector_stores.search(
        vector_store_id=knowledge["store"], query="calorimeter calibrated with cosmic muons"
    )
    top = page.data[0]
    assert top.file_id == knowledge["files"]["docx"] and top.filename == "report.docx"
    assert "cosmic muons" in top.content[0].text
    assert top.attributes == {"kind": "docx", "year": 2025}
    assert "Calibration Results" in top.model_extra["heading"]
    assert 0 < top.score <= 1

    paper = client.vector_stores.search(
        vector_store_id=knowledge["store"], query="the fitted lifetime agrees", max_num_results=3
    )
    assert paper.data[0].file_id == knowledge["files"]["pdf"]
    assert paper.data[0].model_extra["page"] == 1
    assert "RIGHTPARA" in paper.data[0].content[0].text
    assert len(paper.data) <= 3


def test_search_in_chinese_finds_the_scanned_image(stack: Stack, knowledge: dict[str, Any]) -> None:
    client = stack.server.openai(stack.owner)
    page = client.vector_stores.search(vector_store_id=knowledge["store"], query="宇宙线缪子刻度")
    assert page.data[0].file_id == knowledge["files"]["scan"], texts(page)
    assert "宇宙线" in page.data[0].content[0].text


def test_filters_on_attributes_and_a_score_threshold(
    stack: Stack, knowledge: dict[str, Any]
) -> None:
    client = stack.server.openai(stack.owner)
    store = knowledge["store"]
    only_scan = client.vector_stores.search(
        vector_store_id=store,
        query="calorimeter calibrated with cosmic muons",
        filters={"type": "eq", "key": "kind", "value": "scan"},
    )
    assert only_scan.data and {h.file_id for h in only_scan.data} == {knowledge["files"]["scan"]}
    recent = client.vector_stores.search(
        vector_store_id=store,
        query="muon",
        filters={
            "type": "or",
            "filters": [
                {"type": "gte", "key": "year", "value": 2026},
                {"type": "in", "key": "kind", "value": ["docx"]},
            ],
        },
    )
    assert {h.file_id for h in recent.data} <= {
        knowledge["files"]["pdf"],
        knowledge["files"]["docx"],
    }
    assert recent.data
    nothing = client.vector_stores.search(
        vector_store_id=store, query="muon", ranking_options={"score_threshold": 1.0}
    )
    assert all(hit.score >= 1.0 for hit in nothing.data)
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.search(
            vector_store_id=store, query="muon", filters={"type": "like", "key": "k", "value": 1}
        )


def test_another_user_gets_404_until_the_store_is_shared(
    stack: Stack, knowledge: dict[str, Any]
) -> None:
    owner = stack.server.openai(stack.owner)
    other = stack.server.openai(stack.other)
    store = knowledge["store"]
    with pytest.raises(openai.NotFoundError):
        other.vector_stores.retrieve(store)
    with pytest.raises(openai.NotFoundError):
        other.vector_stores.search(vector_store_id=store, query="cosmic muons")
    with pytest.raises(openai.NotFoundError):
        other.vector_stores.files.list(vector_store_id=store)
    assert store not in {s.id for s in other.vector_stores.list().data}

    shared = owner.post(
        f"/vector_stores/{store}/share", body={"groups": ["chemistry"]}, cast_to=httpx.Response
    ).json()
    assert shared["shared_with"] == {"groups": ["chemistry"], "users": []}
    assert other.vector_stores.search(vector_store_id=store, query="cosmic muons").data
    assert store in {s.id for s in other.vector_stores.list().data}
    with pytest.raises(openai.PermissionDeniedError):
        other.vector_stores.update(store, name="mine now")
    with pytest.raises(openai.PermissionDeniedError):
        other.vector_stores.delete(store)
    owner.post(f"/vector_stores/{store}/share", body={}, cast_to=httpx.Response)
    with pytest.raises(openai.NotFoundError):
        other.vector_stores.search(vector_store_id=store, query="cosmic muons")


def test_ingestion_is_metered_on_the_owner(stack: Stack, knowledge: dict[str, Any]) -> None:
    engine = sa.create_engine(stack.platform.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT endpoint, model, pages, prompt_tokens, status_code FROM usage_records "
                    "JOIN users ON users.id = usage_records.user_id "
                    "WHERE users.username = 'kb-owner' AND endpoint LIKE 'knowledge.%'"
                )
            ).all()
    finally:
        engine.dispose()
    converted = [r for r in rows if r.endpoint == "knowledge.convert" and r.status_code == 200]
    embedded = [r for r in rows if r.endpoint == "knowledge.embed" and r.status_code == 200]
    assert {r.model for r in converted} == {"hepai/markitdown", "hepai/mineru"}
    assert sum(r.pages or 0 for r in converted) >= 3
    assert len(embedded) == 3 and all(r.prompt_tokens > 0 for r in embedded)


def test_deleting_a_file_takes_its_chunks_with_it(stack: Stack) -> None:
    client = stack.server.openai(stack.owner)
    store = client.vector_stores.create(name="short-lived")
    first = upload(client, "notes.md", b"# Notes\n\nThe magnet quench happened at 02:00.")
    second = upload(client, "other.md", b"# Other\n\nThe cryostat held its temperature.")
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[first, second], poll_interval_ms=200
    )
    assert batch.status == "completed" and batch.file_counts.completed == 2
    query = "magnet quench"
    assert (
        client.vector_stores.search(vector_store_id=store.id, query=query).data[0].file_id == first
    )
    deleted = client.vector_stores.files.delete(file_id=first, vector_store_id=store.id)
    assert deleted.deleted
    assert first not in {
        h.file_id for h in client.vector_stores.search(vector_store_id=store.id, query=query).data
    }
    client.files.delete(second)  # the platform file itself: it leaves the store too
    assert client.vector_stores.search(vector_store_id=store.id, query="cryostat").data == []
    assert client.vector_stores.retrieve(store.id).file_counts.total == 0
    assert client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)


def test_chat_with_file_search_answers_with_citations(
    stack: Stack, knowledge: dict[str, Any], mock: MockProcess
) -> None:
    client = stack.server.openai(stack.owner)
    reply = "They used cosmic muons [1]."
    raw = client.chat.completions.with_raw_response.create(
        model="mock/chat",
        messages=[{"role": "user", "content": "How was the calorimeter calibrated?"}],
        tools=[{"type": "file_search", "vector_store_ids": [knowledge["store"]]}],  # type: ignore[list-item]
        extra_body={"mock": {"reply": reply, "tag": "file-search"}},
    )
    message = raw.http_response.json()["choices"][0]["message"]
    assert message["content"] == reply
    [citation] = message["annotations"]
    assert citation["type"] == "file_citation" and citation["text"] == "[1]"
    assert reply[citation["start_index"] : citation["end_index"]] == "[1]"
    assert citation["file_citation"]["file_id"] == knowledge["files"]["docx"]
    assert citation["file_citation"]["filename"] == "report.docx"
    assert "Calibration Results" in citation["file_citation"]["heading"]

    [sent] = [
        r
        for r in mock.requests_for("chat-upstream")
        if r["body"].get("mock", {}).get("tag") == "file-search"
    ][-1:]
    system = sent["body"]["messages"][0]
    assert system["role"] == "system" and "[1] (report.docx" in system["content"]
    assert "cosmic muons" in system["content"] and "tools" not in sent["body"]

    stream = client.chat.completions.create(
        model="mock/chat",
        messages=[{"role": "user", "content": "How was the calorimeter calibrated?"}],
        tools=[{"type": "file_search", "vector_store_ids": [knowledge["store"]]}],  # type: ignore[list-item]
        extra_body={"mock": {"reply": reply}},
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == reply
    annotations = chunks[-1].choices[0].delta.model_extra["annotations"]
    assert [a["file_citation"]["file_id"] for a in annotations] == [knowledge["files"]["docx"]]

    other = stack.server.openai(stack.other)
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(
            model="mock/chat",
            messages=[{"role": "user", "content": "How was the calorimeter calibrated?"}],
            tools=[{"type": "file_search", "vector_store_ids": [knowledge["store"]]}],  # type: ignore[list-item]
        )


def test_a_response_with_file_search_cites_the_document(
    stack: Stack, knowledge: dict[str, Any]
) -> None:
    """The Responses API's file_search over a store ingested by the real document tools."""
    client = stack.server.openai(stack.owner)
    tools: Any = [{"type": "file_search", "vector_store_ids": [knowledge["store"]]}]
    reply = "With cosmic muons [1]."
    response = client.responses.create(
        model="mock/chat",
        input="How was the calorimeter calibrated?",
        tools=tools,
        include=["file_search_call.results"],
        extra_body={"mock": {"reply": reply}},
    )
    search, message = response.output
    assert search.type == "file_search_call" and search.results
    assert any("cosmic muons" in (result.text or "") for result in search.results)
    assert message.type == "message"
    [citation] = message.content[0].annotations  # type: ignore[union-attr]
    assert citation.type == "file_citation" and citation.file_id == knowledge["files"]["docx"]
    with client.responses.stream(
        model="mock/chat",
        input="How was the calorimeter calibrated?",
        tools=tools,
        extra_body={"mock": {"reply": reply}},
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.file_search_call.completed" in kinds
    assert "response.output_text.annotation.added" in kinds
    assert [item.type for item in final.output] == ["file_search_call", "message"]
    other = stack.server.openai(stack.other)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="mock/chat", input="calibration?", tools=tools)


def test_the_hepai_client_gets_answers_with_sources(
    stack: Stack, knowledge: dict[str, Any]
) -> None:
    """The recipe of docs/knowledge.md: the hepai client's chat with the file_search tool."""
    client = stack.server.hepai(stack.owner)
    answer = client.chat.completions.create(
        model="mock/chat",
        messages=[{"role": "user", "content": "How was the calorimeter calibrated?"}],
        tools=[{"type": "file_search", "vector_store_ids": [knowledge["store"]]}],
        extra_body={"mock": {"reply": "With cosmic muons [1]."}},
    )
    [citation] = answer.choices[0].message.model_dump()["annotations"]
    assert citation["file_citation"]["file_id"] == knowledge["files"]["docx"]
