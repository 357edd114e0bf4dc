"""The Responses API through the official openai client, in process: translated to chat
completions and back (streams with their typed events, function tools, reasoning, images), the
conversation kept per owner for previous_response_id, passed as sent to a provider that serves
it natively, and held to the same permissions, limits and usage rows as chat."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.responses import Response
from sqlalchemy.orm import Session

from hepai_server.db.engine import make_engine
from hepai_server.errors import HepAIError, InsufficientQuota, NotFound, ServiceUnavailable
from hepai_server.governance import limits
from hepai_server.protocol.response_stream import ResponseStream
from hepai_server.protocol.responses import (
    ResponseShape,
    chat_to_response,
    check_request,
    encode_text_answer,
)
from hepai_server.services import accounts
from hepai_server.services import responses as store
from tests.inprocess import Account, App, Upstream
from tests.stack import Platform, Server, hepai_worker

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


def sent_to(upstream: Upstream, marker: str) -> dict[str, Any]:
    """The last request the upstream got that mentions ``marker``."""
    return [r for r in upstream.requests() if marker in str(r["body"])][-1]


async def test_a_response_is_a_translated_chat_completion(
    app: App, api: openai.AsyncOpenAI, upstream: Upstream, unique
) -> None:
    marker = unique("hello")
    response = await api.responses.create(
        model="mock/chat",
        instructions="be brief",
        input=marker,
        max_output_tokens=64,
        extra_headers={"x-request-id": marker},
    )
    assert response.object == "response" and response.status == "completed"
    assert response.id.startswith("resp_") and response.model == "mock/chat"
    assert response.output_text == "word0 word1 word2 word3 word4"
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant"
    assert response.instructions == "be brief" and response.max_output_tokens == 64
    sent = sent_to(upstream, marker)
    assert sent["path"] == "/v1/chat/completions" and sent["body"]["model"] == "chat-upstream"
    assert sent["body"]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": marker},
    ]
    assert sent["body"]["max_tokens"] == 64
    assert response.usage is not None and response.usage.output_tokens == 5
    row = await app.platform.usage_row(marker)
    assert row["endpoint"] == "responses" and row["model"] == "mock/chat"
    assert row["status_code"] == 200 and row["completion_tokens"] == 5
    assert row["prompt_tokens"] == response.usage.input_tokens
    assert row["cached_tokens"] == response.usage.input_tokens_details.cached_tokens


async def test_a_stream_has_the_full_typed_event_sequence(
    app: App, api: openai.AsyncOpenAI, unique
) -> None:
    marker = unique("stream")
    async with api.responses.stream(
        model="deepseek-ai/deepseek-r1:671b",
        input=marker,
        extra_body={"mock": {"reasoning": True, "chunks": 3}},
        extra_headers={"x-request-id": marker},
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert [item.type for item in final.output] == ["reasoning", "message"]
    reasoning = final.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == "thinking it over"
    assert final.output_text == "word0 word1 word2 "
    assert final.usage is not None and final.usage.output_tokens == 3
    assert final.usage.output_tokens_details.reasoning_tokens == 3
    row = await app.platform.usage_row(marker)
    assert row["stream"] and row["endpoint"] == "responses"
    assert (row["completion_tokens"], row["reasoning_tokens"]) == (3, 3)


async def test_a_stream_without_done_still_completes(api: openai.AsyncOpenAI) -> None:
    async with api.responses.stream(
        model="mock/chat", input="hi", extra_body={"mock": {"done": False, "chunks": 2}}
    ) as stream:
        final = await stream.get_final_response()
    assert final.status == "completed" and final.output_text == "word0 word1 "


async def test_a_function_tool_round_trip(
    api: openai.AsyncOpenAI, upstream: Upstream, unique
) -> None:
    marker = unique("weather")
    first = await api.responses.create(
        model="mock/chat",
        input=f"What is the weather in Beijing? {marker}",
        tools=TOOLS,
        tool_choice="required",
        extra_body={"mock": {"tool_call": True}},
    )
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.arguments == '{"city": "Beijing"}'
    sent = sent_to(upstream, marker)["body"]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": TOOLS[0]["parameters"],
            },
        }
    ]
    assert sent["tool_choice"] == "required"
    result = unique("sunny")
    second = await api.responses.create(
        model="mock/chat",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": result}],
        tools=TOOLS,
    )
    assert second.output_text == "word0 word1 word2 word3 word4"
    assert second.previous_response_id == first.id
    messages = sent_to(upstream, result)["body"]["messages"]
    assert messages[0] == {"role": "user", "content": f"What is the weather in Beijing? {marker}"}
    assert messages[1]["role"] == "assistant"
    assert messages[1]["tool_calls"] == [
        {
            "id": call.call_id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Beijing"}'},
        }
    ]
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": result}


async def test_function_call_arguments_stream_as_deltas(api: openai.AsyncOpenAI) -> None:
    async with api.responses.stream(
        model="mock/chat",
        input="weather?",
        tools=TOOLS,
        extra_body={"mock": {"tool_call": True, "chunks": 1}},
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    kinds = [event.type for event in events]
    added = kinds.index("response.output_item.added")
    assert kinds[added : added + 4] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    done = events[added + 2]
    assert done.type == "response.function_call_arguments.done"
    assert done.name == "get_weather" and done.arguments == '{"city": "Beijing"}'
    assert [item.type for item in final.output] == ["function_call", "message"]


async def test_previous_response_id_continues_the_stored_conversation(
    api: openai.AsyncOpenAI, upstream: Upstream, unique
) -> None:
    first_words, second_words = unique("first"), unique("second")
    first = await api.responses.create(model="mock/chat", input=first_words, instructions="one")
    second = await api.responses.create(
        model="mock/chat", previous_response_id=first.id, input=second_words, instructions="two"
    )
    assert sent_to(upstream, second_words)["body"]["messages"] == [
        {"role": "system", "content": "two"},  # instructions are not carried over
        {"role": "user", "content": first_words},
        {"role": "assistant", "content": "word0 word1 word2 word3 word4"},
        {"role": "user", "content": second_words},
    ]
    kept = await api.responses.retrieve(second.id)
    assert kept.id == second.id and kept.output_text == second.output_text
    items = await api.responses.input_items.list(second.id)
    assert [item.type for item in items.data] == ["message"]
    assert items.data[0].content[0].text == second_words  # type: ignore[union-attr,index]
    await api.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        await api.responses.retrieve(second.id)


async def test_store_false_keeps_nothing(api: openai.AsyncOpenAI, unique) -> None:
    response = await api.responses.create(model="mock/chat", input=unique("forget"), store=False)
    with pytest.raises(openai.NotFoundError):
        await api.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        await api.responses.create(
            model="mock/chat", previous_response_id=response.id, input="and then?"
        )


async def test_another_users_response_is_not_found(
    app: App, api: openai.AsyncOpenAI, make_user: Callable[..., Account], unique
) -> None:
    mine = await api.responses.create(model="mock/chat", input=unique("private"))
    async with app.openai(make_user().key) as other:
        with pytest.raises(openai.NotFoundError):
            await other.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            await other.responses.input_items.list(mine.id)
        with pytest.raises(openai.NotFoundError):
            await other.responses.delete(mine.id)
        with pytest.raises(openai.NotFoundError):
            await other.responses.create(
                model="mock/chat", previous_response_id=mine.id, input="let me in"
            )
    assert (await api.responses.retrieve(mine.id)).id == mine.id


async def test_images_and_developer_messages_in_input(
    api: openai.AsyncOpenAI, upstream: Upstream, unique
) -> None:
    marker = unique("picture")
    image = "data:image/png;base64,iVBORw0KGgo="
    await api.responses.create(
        model="mock/chat",
        input=[
            {"role": "developer", "content": "describe images"},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": marker},
                    {"type": "input_image", "image_url": image, "detail": "low"},
                ],
            },
        ],
    )
    assert sent_to(upstream, marker)["body"]["messages"] == [
        {"role": "system", "content": "describe images"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": marker},
                {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
            ],
        },
    ]


async def test_a_native_provider_gets_the_request_as_sent(
    app: App, api: openai.AsyncOpenAI, upstream: Upstream, unique
) -> None:
    marker = unique("native")
    response = await api.responses.create(
        model="native/responses", input=marker, extra_headers={"x-request-id": marker}
    )
    assert response.output_text == "native responses reply"
    assert response.model == "native/responses"
    sent = sent_to(upstream, marker)
    assert sent["path"] == "/v1/responses" and sent["body"]["model"] == "responses-upstream"
    assert sent["body"]["input"] == marker
    assert sent["headers"]["authorization"].startswith("Bearer upstream-secret")
    row = await app.platform.usage_row(marker)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (13, 3, 4)
    # The provider answered it, so it knows it: the next turn names it.
    follow = unique("follow")
    async with api.responses.stream(
        model="native/responses",
        previous_response_id=response.id,
        input=follow,
        extra_headers={"x-request-id": follow},
    ) as stream:
        final = await stream.get_final_response()
    assert final.output_text == "native responses reply" and final.model == "native/responses"
    assert sent_to(upstream, follow)["body"]["previous_response_id"] == response.id
    row = await app.platform.usage_row(follow)
    assert row["stream"] and (row["prompt_tokens"], row["completion_tokens"]) == (13, 3)
    assert (await api.responses.retrieve(final.id)).output_text == "native responses reply"


async def test_a_conversation_moves_between_translated_and_native_models(
    api: openai.AsyncOpenAI, upstream: Upstream, unique
) -> None:
    opening = unique("opening")
    translated = await api.responses.create(model="mock/chat", input=opening)
    turn = unique("turn")
    await api.responses.create(
        model="native/responses", previous_response_id=translated.id, input=turn
    )
    sent = sent_to(upstream, turn)["body"]
    assert "previous_response_id" not in sent
    assert sent["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": opening}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [
                {
                    "type": "output_text",
                    "text": "word0 word1 word2 word3 word4",
                    "annotations": [],
                    "logprobs": [],
                }
            ],
        },
        {"role": "user", "content": turn},  # the client's own input, as it sent it
    ]


async def test_permissions_and_limits_are_chats(
    app: App, make_user: Callable[..., Account], unique
) -> None:
    account = make_user()
    async with app.openai(account.key) as client:
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(model="team/physics-only", input="hi")
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
        try:
            first = await client.responses.with_raw_response.create(model="mock/chat", input="a")
            assert first.headers["x-ratelimit-limit-requests"] == "1"
            refused = unique("refused")
            with pytest.raises(openai.RateLimitError):
                await client.responses.create(
                    model="mock/chat", input="b", extra_headers={"x-request-id": refused}
                )
            row = await app.platform.usage_row(refused)
            assert row["status_code"] == 429 and row["endpoint"] == "responses"
        finally:
            with app.platform.session() as session:
                limits.clear_limit(
                    session, scope="user", subject_id=account.user_id, model="mock/chat"
                )
            await app.gateway.reload_catalog()


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools"),
        ({"background": True}, "background"),
        ({"input": 42}, "input"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"tool_choice": "sometimes", "tools": TOOLS}, "tool_choice"),
    ],
)
async def test_requests_chat_cannot_serve_are_400(
    client: httpx.AsyncClient, account: Account, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "mock/chat", "input": "hi", **extra}
    answer = await client.post(
        "/v1/responses", json=body, headers={"authorization": f"Bearer {account.key}"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


async def test_cancel_is_for_background_responses_only(api: openai.AsyncOpenAI, unique) -> None:
    response = await api.responses.create(model="mock/chat", input=unique("cancel"))
    with pytest.raises(openai.BadRequestError, match="background"):
        await api.responses.cancel(response.id)
    with pytest.raises(openai.NotFoundError):
        await api.responses.cancel("resp_" + "0" * 48)


def test_worker_models_answer_responses_translated(
    platform: Platform, server: Server, unique
) -> None:
    """A DDF worker of the hepai SDK that serves chat completions (whole and streamed) serves
    Responses clients too."""
    owner = unique("responses-worker")
    key = platform.create_user(owner)
    name = f"{owner}/llm"
    with hepai_worker(server, key, name):
        client = server.openai(key)
        response = client.responses.create(model=name, input="hi")
        assert response.output_text == f"{name}-says-0 {name}-says-1 to-{owner} "
        assert response.usage is not None and response.usage.output_tokens == 3
        with client.responses.stream(model=name, input="hi") as stream:
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            final = stream.get_final_response()
        assert "".join(deltas) == final.output_text == response.output_text
        assert final.usage is not None and final.usage.total_tokens == 7


@pytest.mark.parametrize("finish", ["stop", "length"])
def test_stream_events_are_json_and_agree_with_the_final_response(finish: str) -> None:
    """The events written as bytes on the hot path say what the final response says, and
    the last one's Response is the one built as dicts (what the conversation store keeps)."""
    body = {"model": "m", "input": "x", "instructions": "be brief", "top_p": 0.5}
    model, settings = check_request(body)
    shape = ResponseShape.of(body, model, settings)
    stream = ResponseStream(shape)
    chunks = [{"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]}]
    chunks += [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in ('a "b"', " c\n")]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    raw = b"".join(stream.feed(chunk) for chunk in chunks) + stream.close()
    events = [orjson.loads(event.split(b"\ndata: ", 1)[1]) for event in raw.split(b"\n\n") if event]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert stream.finished is not None and final == shape.response(stream.finished)
    assert events[-1]["type"] == f"response.{final['status']}"
    assert final["status"] == ("completed" if finish == "stop" else "incomplete")
    assert final["usage"]["total_tokens"] == 7
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert done == final["output"]
    assert final["output"][1]["content"][0]["text"] == 'a "b" c\n'
    (text_done,) = [e for e in events if e["type"] == "response.output_text.done"]
    assert text_done["text"] == 'a "b" c\n' and text_done["item_id"] == final["output"][1]["id"]
    for event in (events[0], events[1], events[-1]):
        Response.model_validate(event["response"])


@pytest.mark.parametrize(
    ("failure", "reported"),
    [(ServiceUnavailable, "server_error"), (InsufficientQuota, "rate_limit_exceeded")],
)
def test_a_stream_whose_upstream_fails_ends_with_the_failed_response(
    failure: type[HepAIError], reported: str
) -> None:
    """What was answered so far, then the error (the platform's code) and the failed Response
    (OpenAI's code): the one built as dicts, word for word, and valid to the openai client's
    types."""
    body = {"model": "m", "input": "x"}
    model, settings = check_request(body)
    shape = ResponseShape.of(body, model, settings)
    stream = ResponseStream(shape)
    raw = stream.feed({"choices": [{"index": 0, "delta": {"content": "half an answer"}}]})
    raw += stream.fail(failure("the upstream went away"))
    events = [orjson.loads(event.split(b"\ndata: ", 1)[1]) for event in raw.split(b"\n\n") if event]
    assert [e["type"] for e in events][-3:] == [
        "response.output_item.done",
        "error",
        "response.failed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    failed = events[-1]["response"]
    assert events[-2]["code"] == failure.code
    error = {"code": reported, "message": "the upstream went away"}
    assert failed == shape.response(shape.head("failed", stream.output, None, error=error))
    assert failed["output"][0]["content"][0]["text"] == "half an answer"
    Response.model_validate(failed)


def test_the_conversation_store_keeps_each_owners_turns(migrated_url: str) -> None:
    """The store's one INSERT is written per database dialect: both keep and chain turns."""
    engine = make_engine(migrated_url)
    now, keep = datetime.now(UTC), timedelta(days=1)
    try:
        with Session(engine) as session:
            owner = accounts.create_user(
                session, username=f"o-{secrets.token_hex(3)}", password=None
            )
            other = accounts.create_user(
                session, username=f"x-{secrets.token_hex(3)}", password=None
            )
            session.commit()
            owner_id, other_id = owner.id, other.id
        turns = [("resp_a", None, "one"), ("resp_b", "resp_a", "two")]
        for response_id, previous, text in turns:
            with engine.begin() as connection:
                store.save_response(
                    connection,
                    user_id=owner_id,
                    response={
                        "id": response_id,
                        "model": "m",
                        "previous_response_id": previous,
                        "output": [{"type": "message", "role": "assistant", "content": text}],
                    },
                    input_items=[{"type": "message", "role": "user", "content": text}],
                    provider=None,
                    now=now,
                    retention=keep,
                )
        # An upstream naming a kept id (a worker answering natively chooses its ids) changes
        # nothing; one naming an id the platform mints later loses it to the platform's.
        for planted in ("resp_a", "resp_c"):
            with engine.begin() as connection:
                store.save_response(
                    connection,
                    user_id=other_id,
                    response={"id": planted, "model": "stolen", "output": []},
                    input_items=[],
                    provider="worker:hostile",
                    now=now,
                    retention=keep,
                )
        with engine.begin() as connection:
            store.save_response(
                connection,
                user_id=owner_id,
                response={"id": "resp_c", "model": "m", "output": []},
                input_items=[],
                provider=None,
                now=now,
                retention=keep,
            )
        with Session(engine) as session:
            conversation = store.conversation(
                session, user_id=owner_id, response_id="resp_b", now=now
            )
            assert [item["content"] for item in conversation.items] == ["one"] * 2 + ["two"] * 2
            with pytest.raises(NotFound):
                store.find_response(session, user_id=other_id, response_id="resp_a", now=now)
            mine = store.find_response(session, user_id=owner_id, response_id="resp_c", now=now)
            assert mine.model == "m"
            with pytest.raises(NotFound):
                store.find_response(
                    session, user_id=owner_id, response_id="resp_a", now=now + 2 * keep
                )
            assert store.purge_expired(session, now=now + 2 * keep) == 3
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
        {
            "prompt_tokens": 20,
            "completion_tokens": 5,
            "total_tokens": 25,
            "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
        {"prompt_tokens": 20, "completion_tokens": 5, "prompt_cache_hit_tokens": 4},
        {"prompt_tokens": "20", "completion_tokens": 5},
        None,
    ],
)
@pytest.mark.parametrize("finish", ["stop", "length", None])
def test_a_text_answer_written_as_bytes_is_the_response_built_as_dicts(
    usage: Any, finish: str | None
) -> None:
    """The non-stream hot path writes a text answer's Response directly: it must say exactly
    what the Response built from dicts says, and OpenAI's types must validate it."""
    body = {"model": "m", "input": "x", "instructions": "be brief", "store": False, "top_p": 0.5}
    model, settings = check_request(body)
    shape = ResponseShape.of(body, model, settings)
    chat = {
        "choices": [{"index": 0, "message": {"content": 'a "b"\n'}, "finish_reason": finish}],
        "usage": usage,
    }
    written = encode_text_answer(chat, shape)
    assert written is not None
    fast = orjson.loads(written)
    built = shape.response(chat_to_response(chat, shape))
    assert fast["output"][0]["id"] != built["output"][0]["id"]  # each answer its own item id
    fast["output"][0]["id"] = built["output"][0]["id"]
    assert fast == built
    assert fast == orjson.loads(shape.encode(chat_to_response(chat, shape)) or b"") | {
        "output": fast["output"]
    }
    Response.model_validate(fast)
    assert ResponseShape.of(body, model).echo == {k: fast[k] for k in shape.echo}


def test_answers_other_than_text_are_built_as_dicts() -> None:
    body = {"model": "m", "input": "x"}
    shape = ResponseShape.of(body, "m")
    reasoning = {"choices": [{"message": {"content": "a", "reasoning_content": "hmm"}}]}
    calls = {"choices": [{"message": {"content": None, "tool_calls": [{"id": "c"}]}}]}
    for chat in (reasoning, calls, {"choices": []}, {}, {"choices": [{"message": {}}]}):
        assert encode_text_answer(chat, shape) is None
