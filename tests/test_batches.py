"""The Batch API in process, through the official openai client: input files checked line by
line, the Batch object exactly OpenAI's, every line answered once with one usage row, lines
the limits refuse waiting rather than failing, cancelling, pagination, and every id checked
against its owner."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import openai
import orjson
import pytest
from openai.types import Batch

from hepai_server.db.tables import Batch as BatchRow
from hepai_server.gateway.batches import Batches
from hepai_server.governance import limits
from hepai_server.jobs.local import LocalRunner
from hepai_server.protocol.batches import output_line, parse_lines, refusal, request_id
from hepai_server.services import accounts
from hepai_server.services.batches import batch_object
from tests.inprocess import Account, App, Upstream

CHAT_URL = "/v1/chat/completions"


def chat_line(custom_id: str, text: str = "hi", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT_URL,
        "body": {"model": "mock/chat", "messages": [{"role": "user", "content": text}], **body},
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


async def submit(client: openai.AsyncOpenAI, lines: list[Any], endpoint: str = CHAT_URL) -> Batch:
    file = await client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return await client.batches.create(
        input_file_id=file.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        metadata={"project": "tests"},
    )


async def until(client: openai.AsyncOpenAI, batch_id: str, done: Callable[[Batch], bool]) -> Batch:
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        batch = await client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        assert asyncio.get_running_loop().time() < deadline, batch
        await asyncio.sleep(0.05)


def answered(count: int) -> Callable[[Batch], bool]:
    return lambda b: b.request_counts is not None and b.request_counts.completed == count


def answered_count(batch: Batch) -> int:
    return batch.request_counts.completed if batch.request_counts is not None else 0


def ended(batch: Batch) -> bool:
    return batch.status in ("completed", "failed", "expired", "cancelled")


async def lines_of(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    content = await client.files.content(file_id)
    return [orjson.loads(line) for line in content.content.splitlines()]


# -- pure parts ----------------------------------------------------------------------------------


def test_each_fault_of_an_input_file_is_named_with_its_line() -> None:
    raw = b"\n".join(
        [
            orjson.dumps(chat_line("a")),
            b"{not json",
            orjson.dumps(chat_line("a")),
            orjson.dumps({**chat_line("b"), "url": "/v1/embeddings"}),
            orjson.dumps({**chat_line("c"), "method": "GET"}),
            orjson.dumps({"custom_id": "d", "method": "POST", "url": CHAT_URL, "body": {}}),
            orjson.dumps({**chat_line("e"), "custom_id": 7}),
            b"",
            orjson.dumps(chat_line("f")),
        ]
    )
    lines, errors = parse_lines(raw, endpoint=CHAT_URL, max_lines=100)
    assert [(e["code"], e["line"], e["param"]) for e in errors] == [
        ("invalid_json_line", 2, None),
        ("duplicate_custom_id", 3, "custom_id"),
        ("invalid_url", 4, "url"),
        ("invalid_method", 5, "method"),
        ("missing_required_parameter", 6, "body.model"),
        ("missing_required_parameter", 7, "custom_id"),
    ]
    assert [(line.index, line.custom_id) for line in lines] == [(0, "a"), (1, "f")]


def test_a_file_longer_than_the_setting_or_empty_fails() -> None:
    raw = jsonl([chat_line(str(n)) for n in range(4)])
    errors = parse_lines(raw, endpoint=CHAT_URL, max_lines=3)[1]
    assert [(e["code"], e["line"]) for e in errors] == [("too_many_tasks", 4)]
    assert parse_lines(b"\n\n", endpoint=CHAT_URL, max_lines=3)[1][0]["code"] == "empty_file"
    assert len(parse_lines(raw, endpoint=CHAT_URL, max_lines=4)[0]) == 4


def test_a_streaming_line_is_refused_by_itself() -> None:
    refused = refusal({"model": "m", "stream": True})
    assert refused is not None and refused.status == 400 and refused.param == "stream"
    assert refusal({"model": "m", "stream": False}) is None


def test_batch_objects_and_output_lines_have_openais_shapes() -> None:
    row = BatchRow(
        id="batch_0123",
        user_id=1,
        endpoint=CHAT_URL,
        input_file_id="file-1",
        completion_window="24h",
        status="failed",
        errors=[{"code": "empty_file", "message": "no requests", "line": None, "param": None}],
        metadata_={"k": "v"},
        total=3,
        completed=2,
        failed=1,
        input_tokens=10,
        output_tokens=5,
        created_at=1_700_000_000,
        expires_at=1_700_086_400,
        failed_at=1_700_000_001,
    )
    batch = Batch.model_validate(batch_object(row))
    assert batch.object == "batch" and batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert batch.errors.data[0].code == "empty_file"
    assert batch.request_counts is not None and batch.request_counts.total == 3
    assert batch.usage is not None and batch.usage.total_tokens == 15
    line = orjson.loads(
        output_line(
            batch_id="batch_0123",
            index=4,
            custom_id="x",
            status_code=200,
            body={"ok": 1},
            failure=None,
        )
    )
    assert line["id"].startswith("batch_req_") and line["error"] is None
    assert line["response"] == {
        "status_code": 200,
        "request_id": request_id("batch_0123", 4),
        "body": {"ok": 1},
    }


# -- through the API -----------------------------------------------------------------------------


async def test_a_chat_batch_answers_every_line_once_with_one_usage_row_each(
    app: App, api: openai.AsyncOpenAI
) -> None:
    lines = [chat_line(f"q{n}", f"question {n}") for n in range(12)]
    lines.append(chat_line("streamed", stream=True))
    lines.append(chat_line("forbidden", model="team/physics-only"))
    # file_search is the platform's, as on a live chat: a store that is not the owner's is 404.
    search = {"type": "file_search", "vector_store_ids": ["vs_not_yours"]}
    lines.append(chat_line("grounded", tools=[search]))
    created = await submit(api, lines)
    assert created.id.startswith("batch_") and created.status == "validating"
    assert created.metadata == {"project": "tests"} and created.completion_window == "24h"
    batch = await until(api, created.id, ended)
    assert batch.status == "completed" and batch.errors is None
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (15, 12)
    assert batch.request_counts.failed == 3
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    output = await lines_of(api, batch.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(f"q{n}" for n in range(12))
    for line in output:
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert line["response"]["body"]["object"] == "chat.completion"
    refused, forbidden, grounded = await lines_of(api, batch.error_file_id)
    assert refused["custom_id"] == "streamed"
    assert refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["param"] == "stream"
    # A model the owner may not call answers as a live call would: 404, as if there were none.
    assert forbidden["custom_id"] == "forbidden"
    assert forbidden["response"]["status_code"] == 404
    assert forbidden["response"]["body"]["error"]["code"] == "model_not_found"
    assert grounded["custom_id"] == "grounded"
    assert grounded["response"]["status_code"] == 404
    assert "vs_not_yours" in grounded["response"]["body"]["error"]["message"]
    rows = [await app.platform.usage_row(request_id(batch.id, n)) for n in range(15)]
    assert {row["endpoint"] for row in rows} == {"chat.completions"}
    assert {row["client_request_id"] for row in rows} == {batch.id}
    assert [row["status_code"] for row in rows] == [200] * 12 + [400, 404, 404]
    assert batch.usage is not None
    assert batch.usage.output_tokens == sum(row["completion_tokens"] or 0 for row in rows)
    output_file = await api.files.retrieve(batch.output_file_id or "")
    assert output_file.purpose == "batch_output"


async def test_embeddings_and_responses_batches_answer_in_their_endpoints_shape(
    app: App, api: openai.AsyncOpenAI
) -> None:
    embed = await submit(
        api,
        [
            {
                "custom_id": f"e{n}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "mock/embed", "input": f"text {n}"},
            }
            for n in range(3)
        ],
        "/v1/embeddings",
    )
    respond = await submit(
        api,
        [
            {
                "custom_id": "r0",
                "method": "POST",
                "url": "/v1/responses",
                "body": {"model": "mock/chat", "input": "hello", "store": False},
            }
        ],
        "/v1/responses",
    )
    embedded = await until(api, embed.id, ended)
    assert embedded.status == "completed"
    for line in await lines_of(api, embedded.output_file_id):
        assert line["response"]["body"]["object"] == "list"
    responded = await until(api, respond.id, ended)
    (answer,) = await lines_of(api, responded.output_file_id)
    assert answer["response"]["body"]["object"] == "response"
    row = await app.platform.usage_row(request_id(respond.id, 0))
    assert row["endpoint"] == "responses" and row["status_code"] == 200
    row = await app.platform.usage_row(request_id(embed.id, 2))
    assert row["endpoint"] == "embeddings" and row["model"] == "mock/embed"


async def test_a_faulty_input_file_fails_the_batch_with_openais_errors(
    api: openai.AsyncOpenAI,
) -> None:
    created = await submit(api, [chat_line("a"), chat_line("a")])
    batch = await until(api, created.id, ended)
    assert batch.status == "failed" and batch.failed_at
    assert batch.errors is not None and batch.errors.object == "list"
    assert [(e.code, e.line) for e in batch.errors.data or []] == [("duplicate_custom_id", 2)]
    assert batch.output_file_id is None and batch.error_file_id is None


async def test_a_line_the_limits_refuse_waits_and_a_cancel_ends_the_batch(
    app: App, make_user: Callable[..., Account]
) -> None:
    account = make_user()
    with app.platform.session() as session:
        limits.set_limit(
            session,
            scope="user",
            subject_id=account.user_id,
            model="mock/chat",
            rpm=2,
            tpm=None,
            concurrency=None,
            now=datetime.now(UTC),
            by="test",
        )
    await app.gateway.reload_catalog()
    async with app.openai(account.key) as client:
        created = await submit(client, [chat_line(f"q{n}") for n in range(5)])
        await until(client, created.id, answered(2))
        await asyncio.sleep(0.5)  # several retries of the refused lines
        running = await client.batches.retrieve(created.id)
        # A minute's window may turn meanwhile and let more in: never all of them.
        assert running.status == "in_progress" and running.request_counts is not None
        done = running.request_counts.completed
        assert 2 <= done < 5 and running.request_counts.failed == 0
        cancelling = await client.batches.cancel(created.id)
        assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
        batch = await until(client, created.id, ended)
        assert batch.status == "cancelled" and batch.cancelled_at
        assert batch.request_counts is not None and batch.request_counts.completed == done
        assert len(await lines_of(client, batch.output_file_id)) == done
        unanswered = await lines_of(client, batch.error_file_id)
        assert {line["error"]["code"] for line in unanswered} == {"batch_cancelled"}
        assert len(unanswered) == 5 - done
        again = await client.batches.cancel(created.id)
        assert again.status == "cancelled"
    # The refusals were no calls: a row for each answered line, none for the others.
    rows = [await app.platform.usage_rows(request_id(batch.id, n), timeout=0) for n in range(5)]
    assert sum(map(len, rows)) == done and all(len(found) <= 1 for found in rows)


async def test_refused_lines_are_answered_once_the_limit_allows(
    app: App, make_user: Callable[..., Account]
) -> None:
    account = make_user()
    with app.platform.session() as session:
        limits.set_limit(
            session,
            scope="user",
            subject_id=account.user_id,
            model="mock/chat",
            rpm=1,
            tpm=None,
            concurrency=None,
            now=datetime.now(UTC),
            by="test",
        )
    await app.gateway.reload_catalog()
    async with app.openai(account.key) as client:
        created = await submit(client, [chat_line(f"q{n}") for n in range(4)])
        await until(client, created.id, answered(1))
        with app.platform.session() as session:
            limits.clear_limit(session, scope="user", subject_id=account.user_id, model="mock/chat")
        await app.gateway.reload_catalog()
        batch = await until(client, created.id, ended)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (4, 0)
    for n in range(4):
        assert (await app.platform.usage_row(request_id(batch.id, n)))["status_code"] == 200


async def test_a_finished_batch_cannot_be_cancelled(api: openai.AsyncOpenAI) -> None:
    batch = await until(api, (await submit(api, [chat_line("only")])).id, ended)
    with pytest.raises(openai.ConflictError):
        await api.batches.cancel(batch.id)


async def test_batches_list_newest_first_in_pages(
    app: App, make_user: Callable[..., Account]
) -> None:
    async with app.openai(make_user().key) as client:
        made = [(await submit(client, [chat_line("x")])).id for _ in range(3)]
        first = await client.batches.list(limit=2)
        assert [b.id for b in first.data] == made[::-1][:2] and first.has_more
        rest = await client.batches.list(limit=2, after=first.data[-1].id)
        assert [b.id for b in rest.data] == [made[0]] and not rest.has_more
        assert [b.id async for b in client.batches.list(limit=1)] == made[::-1]
        for batch_id in made:
            await until(client, batch_id, ended)


async def test_only_the_owner_sees_cancels_and_feeds_a_batch(
    app: App, api: openai.AsyncOpenAI, make_user: Callable[..., Account]
) -> None:
    batch = await submit(api, [chat_line("mine")])
    mine = await api.files.create(file=("in.jsonl", jsonl([chat_line("z")])), purpose="batch")
    async with app.openai(make_user().key) as other:
        with pytest.raises(openai.NotFoundError):
            await other.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            await other.batches.cancel(batch.id)
        assert (await other.batches.list()).data == []
        with pytest.raises(openai.NotFoundError):
            await other.batches.create(
                input_file_id=mine.id, endpoint=CHAT_URL, completion_window="24h"
            )
    await until(api, batch.id, ended)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"endpoint": "/v1/moderations"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"input_file_id": None}, "input_file_id"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"purpose": "user_data"}, "input_file_id"),
    ],
)
async def test_a_bad_batch_request_is_400_naming_its_field(
    app: App, account: Account, change: dict[str, Any], param: str
) -> None:
    async with app.client() as http:
        auth = {"authorization": f"Bearer {account.key}"}
        upload = await http.post(
            "/v1/files",
            headers=auth,
            files={"file": ("in.jsonl", jsonl([chat_line("a")]))},
            data={"purpose": change.pop("purpose", "batch")},
        )
        body = {
            "input_file_id": upload.json()["id"],
            "endpoint": CHAT_URL,
            "completion_window": "24h",
            **change,
        }
        answer = await http.post("/v1/batches", headers=auth, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


async def test_a_batch_whose_window_ends_expires_with_the_rest_in_its_error_file(
    app: App, make_user: Callable[..., Account]
) -> None:
    account = make_user()
    with app.platform.session() as session:
        limits.set_limit(
            session,
            scope="user",
            subject_id=account.user_id,
            model="mock/chat",
            rpm=1,
            tpm=None,
            concurrency=None,
            now=datetime.now(UTC),
            by="test",
        )
    await app.gateway.reload_catalog()
    now = [time.time()]
    runner = LocalRunner(concurrency=1, recovery_seconds=3600)
    batches = Batches(app.gateway, runner, clock=lambda: now[0])
    await runner.start()
    try:
        caller = await app.gateway.auth.authenticate(account.key)
        async with app.openai(account.key) as client:
            file = await client.files.create(
                file=("in.jsonl", jsonl([chat_line(f"q{n}") for n in range(3)])), purpose="batch"
            )
            created = await batches.create(
                caller,
                {"input_file_id": file.id, "endpoint": CHAT_URL, "completion_window": "24h"},
            )
            await until(client, created["id"], answered(1))
            now[0] += 24 * 3600  # the window ends while the other lines wait for the limit
            batch = await until(client, created["id"], ended)
            assert batch.status == "expired" and batch.expired_at
            assert batch.request_counts is not None
            done = batch.request_counts.completed  # one, or two if a minute turned meanwhile
            assert batch.request_counts.failed == 3 - done
            output = await lines_of(client, batch.output_file_id)
            expired = await lines_of(client, batch.error_file_id)
            assert len(output) == done and len(expired) == 3 - done
            assert {line["custom_id"] for line in output + expired} == {"q0", "q1", "q2"}
            assert {line["error"]["code"] for line in expired} == {"batch_expired"}
            assert all(line["response"] is None for line in expired)
    finally:
        await runner.close()
        with app.platform.session() as session:
            limits.clear_limit(session, scope="user", subject_id=account.user_id, model="mock/chat")
        await app.gateway.reload_catalog()


async def test_revoking_the_key_that_created_a_batch_fails_the_rest_of_it(
    app: App, make_user: Callable[..., Account]
) -> None:
    account = make_user()
    with app.platform.session() as session:
        limits.set_limit(
            session,
            scope="user",
            subject_id=account.user_id,
            model="mock/chat",
            rpm=1,
            tpm=None,
            concurrency=None,
            now=datetime.now(UTC),
            by="test",
        )
    await app.gateway.reload_catalog()
    _, other_key = app.platform.make_key(account.username)
    async with app.openai(account.key) as client, app.openai(other_key) as reader:
        created = await submit(client, [chat_line(f"q{n}") for n in range(3)])
        await until(client, created.id, answered(1))
        with app.platform.session() as session:
            accounts.revoke_api_key(session, key_id=account.key_id)
        app.platform.callers_changed()
        batch = await until(reader, created.id, ended)
        assert batch.status == "failed" and batch.failed_at and batch.errors is not None
        assert [e.code for e in batch.errors.data or []] == ["invalid_api_key"]
        done = answered_count(batch)
        assert len(await lines_of(reader, batch.output_file_id)) == done < 3
        rest = await lines_of(reader, batch.error_file_id)
        assert {line["error"]["code"] for line in rest} == {"invalid_api_key"}
        assert len(rest) == 3 - done


async def test_a_batch_interrupted_by_a_restart_resumes_with_the_lines_still_owed(
    app: App, upstream: Upstream, make_user: Callable[..., Account], unique
) -> None:
    account = make_user()
    caller = await app.gateway.auth.authenticate(account.key)
    marker = unique("resumed")
    lines = [chat_line(f"q{n}", f"{marker} {n}", mock={"delay": 0.1}) for n in range(16)]
    before = LocalRunner(concurrency=1, recovery_seconds=3600)
    batches = Batches(app.gateway, before)
    await before.start()
    async with app.openai(account.key) as client:
        file = await client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        body = {"input_file_id": file.id, "endpoint": CHAT_URL, "completion_window": "24h"}
        batch_id = (await batches.create(caller, body))["id"]
        await until(client, batch_id, lambda b: answered_count(b) >= 4)
        await before.close()  # the process stops, lines in flight and all
        stopped = await client.batches.retrieve(batch_id)
        assert stopped.status == "in_progress" and answered_count(stopped) < 16
        after = LocalRunner(concurrency=1, recovery_seconds=0.05)
        Batches(app.gateway, after, page_lines=5)  # the lines read, and written, in pages
        await after.start()  # finds the unfinished batch by itself
        try:
            batch = await until(client, batch_id, ended)
        finally:
            await after.close()
        output = await lines_of(client, batch.output_file_id)
    assert batch.status == "completed" and answered_count(batch) == 16
    assert sorted(line["custom_id"] for line in output) == sorted(f"q{n}" for n in range(16))
    for n in range(16):
        assert len(await app.platform.usage_rows(request_id(batch_id, n))) == 1
    # Only the lines in flight when it stopped were called twice.
    calls = [r for r in upstream.requests() if marker in str(r["body"])]
    assert 16 <= len(calls) <= 16 + app.gateway.settings.batch_concurrency


async def test_an_input_file_larger_than_the_setting_fails_the_batch(
    app: App, account: Account
) -> None:
    runner = LocalRunner(concurrency=1, recovery_seconds=3600)
    batches = Batches(app.gateway, runner)
    batches.max_bytes = 100
    await runner.start()
    try:
        caller = await app.gateway.auth.authenticate(account.key)
        async with app.openai(account.key) as client:
            raw = jsonl([chat_line(f"q{n}") for n in range(3)])
            assert len(raw) > 100
            file = await client.files.create(file=("in.jsonl", raw), purpose="batch")
            created = await batches.create(
                caller,
                {"input_file_id": file.id, "endpoint": CHAT_URL, "completion_window": "24h"},
            )
            batch = await until(client, created["id"], ended)
    finally:
        await runner.close()
    assert batch.status == "failed" and batch.errors is not None
    (fault,) = batch.errors.data or []
    assert (fault.code, fault.param) == ("file_too_large", "input_file_id")


async def test_an_upstream_429_is_tried_again_rather_than_answered(
    app: App, upstream: Upstream, account: Account, unique
) -> None:
    now = [time.time()]
    runner = LocalRunner(concurrency=1, recovery_seconds=3600)
    batches = Batches(app.gateway, runner, clock=lambda: now[0])
    await runner.start()
    marker = unique("busy")
    lines = [chat_line("fine"), chat_line("busy", marker, mock={"status": 429})]
    try:
        caller = await app.gateway.auth.authenticate(account.key)
        async with app.openai(account.key) as client:
            file = await client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
            created = await batches.create(
                caller,
                {"input_file_id": file.id, "endpoint": CHAT_URL, "completion_window": "24h"},
            )
            await until(client, created["id"], answered(1))
            deadline = asyncio.get_running_loop().time() + 10
            while len([r for r in upstream.requests() if marker in str(r["body"])]) < 3:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            running = await client.batches.retrieve(created["id"])
            assert running.status == "in_progress" and running.request_counts is not None
            assert running.request_counts.failed == 0
            now[0] += 24 * 3600
            batch = await until(client, created["id"], ended)
            (busy,) = await lines_of(client, batch.error_file_id)
    finally:
        await runner.close()
    assert batch.status == "expired"
    assert (busy["custom_id"], busy["error"]["code"]) == ("busy", "batch_expired")
    assert await app.platform.usage_rows(request_id(batch.id, 1), timeout=0.3) == []
    assert len(await app.platform.usage_rows(request_id(batch.id, 0))) == 1
