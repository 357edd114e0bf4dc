"""Anthropic Messages through the real anthropic client, translated to chat completions (in
process), or passed as sent to native providers and to workers that speak Messages (the
workers are real processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx
import pytest

from tests.inprocess import BASE_URL, Account, App, Upstream
from tests.stack import Platform, Server


@pytest.fixture
async def claude(app: App, account: Account) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=BASE_URL + "/apiv2/anthropic",
        api_key=account.key,
        max_retries=0,
        http_client=app.client(),
    ) as client:
        yield client


async def test_message_round_trip(
    claude: anthropic.AsyncAnthropic, upstream: Upstream, unique
) -> None:
    marker = unique("claude")
    message = await claude.messages.create(
        model="mock/chat",
        max_tokens=64,
        system="be brief",
        messages=[{"role": "user", "content": [{"type": "text", "text": marker}]}],
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == "word0 word1 word2 word3 word4"
    assert message.stop_reason == "end_turn" and message.model == "mock/chat"
    assert message.usage.output_tokens == 5 and message.usage.input_tokens > 0
    sent = next(r["body"] for r in upstream.requests() if marker in str(r["body"]))
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": marker},
    ]
    assert sent["max_tokens"] == 64 and sent["model"] == "chat-upstream"


async def test_stream_events_with_thinking(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(
        model="deepseek-ai/deepseek-r1:671b",
        max_tokens=64,
        messages=[{"role": "user", "content": "think"}],
        extra_body={"mock": {"reasoning": True}},
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "word0 word1 word2 word3 word4 "
    kinds = [block.type for block in final.content]
    assert kinds == ["thinking", "text"]
    assert final.content[0].thinking == "thinking it over"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5


async def test_tools_round_trip(
    claude: anthropic.AsyncAnthropic, upstream: Upstream, unique
) -> None:
    marker = unique("tools")
    tools = [
        {
            "name": "get_weather",
            "description": "weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    message = await claude.messages.create(
        model="mock/chat",
        max_tokens=64,
        tools=tools,
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": marker}],
        extra_body={"mock": {"tool_call": True}},
    )
    (call,) = [block for block in message.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"city": "Beijing"}
    sent = next(r["body"] for r in upstream.requests() if marker in str(r["body"]))
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == "required"
    async with claude.messages.stream(
        model="mock/chat",
        max_tokens=64,
        tools=tools,
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
            },
        ],
        extra_body={"mock": {"tool_call": True}},
    ) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["tool_use", "text"]
    assert final.content[0].input == {"city": "Beijing"}


async def test_every_messages_path_and_count_tokens(
    client: httpx.AsyncClient, account: Account
) -> None:
    body = {"model": "mock/chat", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
    headers = {"x-api-key": account.key}
    for path in ("/anthropic/v1/messages", "/anthropic/messages", "/v1/messages"):
        response = await client.post("/apiv2" + path, headers=headers, json=body)
        assert response.status_code == 200 and response.json()["type"] == "message", path
    counted = await client.post(
        "/apiv2/anthropic/v1/messages/count_tokens",
        headers=headers,
        json={"model": "mock/chat", "messages": [{"role": "user", "content": "hello " * 40}]},
    )
    assert counted.status_code == 200 and 40 <= counted.json()["input_tokens"] <= 200
    hidden = await client.post(
        "/apiv2/anthropic/v1/messages/count_tokens",
        headers=headers,
        json={"model": "team/physics-only", "messages": []},
    )
    assert hidden.status_code == 404


async def test_bad_messages_requests_are_400(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError):
        await claude.messages.create(
            model="mock/chat", max_tokens=0, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.BadRequestError):
        await claude.messages.create(model="mock/chat", max_tokens=5, messages=[])


async def test_native_providers_get_messages_as_sent(
    app: App, claude: anthropic.AsyncAnthropic, upstream: Upstream, unique
) -> None:
    request_id = unique("native")
    message = await claude.messages.create(
        model="native/claude",
        max_tokens=32,
        messages=[{"role": "user", "content": [{"type": "text", "text": request_id}]}],
        extra_headers={"x-request-id": request_id},
    )
    assert message.content[0].text == "native anthropic reply"
    assert message.model == "native/claude"
    sent = next(r for r in upstream.requests() if request_id in str(r["body"]))
    assert sent["path"] == "/v1/messages" and sent["body"]["model"] == "claude-upstream"
    assert sent["body"]["messages"][0]["content"] == [{"type": "text", "text": request_id}]
    assert sent["headers"]["x-api-key"].startswith("upstream-secret")
    row = await app.platform.usage_row(request_id)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (11, 3)
    stream_id = unique("native-stream")
    async with claude.messages.stream(
        model="native/claude",
        max_tokens=32,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-request-id": stream_id},
    ) as stream:
        assert "".join([piece async for piece in stream.text_stream]) == "native anthropic reply"
    row = await app.platform.usage_row(stream_id)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (11, 3, 14)


def test_worker_models_speak_messages_too(platform: Platform, server: Server, unique) -> None:
    from tests.stack import our_worker

    owner = unique("claude-worker")
    key = platform.create_user(owner)
    name = f"{owner}/llm"
    with our_worker(server, key, name):
        client = anthropic.Anthropic(base_url=server.base_url, api_key=key, max_retries=0)
        server.clients.enter_context(client)
        message = client.messages.create(
            model=name, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content[0].text == f"{name} chats"
        assert message.usage.output_tokens == 2


def test_worker_with_anthropic_messages_gets_them_as_sent(
    platform: Platform, server: Server, unique
) -> None:
    from tests.stack import hepai_worker

    owner = unique("claude-native-worker")
    key = platform.create_user(owner)
    name = f"{owner}/native"
    with hepai_worker(server, key, name):
        client = anthropic.Anthropic(base_url=server.base_url, api_key=key, max_retries=0)
        server.clients.enter_context(client)
        message = client.messages.create(
            model=name, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content[0].text == f"{name} speaks messages"
        assert message.usage.output_tokens == 4
