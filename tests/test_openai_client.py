"""The official openai client against the app: models, chat, completions, embeddings, rerank.

In process (ASGITransport), but for the last test, which streams from a real server over a
socket as every client outside the tests does."""

from __future__ import annotations

import base64
import struct

import httpx
import openai
import pytest

from tests.inprocess import Account, App, Upstream
from tests.stack import Server


async def test_lists_models_with_slashes_and_colons(api: openai.AsyncOpenAI) -> None:
    models = [model async for model in api.models.list()]
    ids = {model.id for model in models}
    assert {"mock/chat", "deepseek-ai/deepseek-r1:671b", "mock/embed"} <= ids
    row = next(model for model in models if model.id == "mock/chat")
    assert row.object == "model" and row.owned_by == "mock"
    assert "openai/gpt-4o" not in ids, "a provider without its key must not be listed"


async def test_retrieves_one_model_by_path_id(api: openai.AsyncOpenAI) -> None:
    model = await api.models.retrieve("deepseek-ai/deepseek-r1:671b")
    assert model.id == "deepseek-ai/deepseek-r1:671b"


@pytest.mark.parametrize("prefix", ["/apiv2", "/v1", "/apiv2/v1"])
async def test_every_prefix_serves_the_api(app: App, account: Account, prefix: str) -> None:
    async with app.openai(account.key, prefix=prefix) as api:
        reply = await api.chat.completions.create(
            model="mock/chat", messages=[{"role": "user", "content": "hello"}]
        )
    assert reply.choices[0].message.content == "word0 word1 word2 word3 word4"


async def test_chat_returns_our_model_id_and_usage(
    api: openai.AsyncOpenAI, upstream: Upstream, unique
) -> None:
    marker = unique("count please")
    reply = await api.chat.completions.create(
        model="mock/chat",
        messages=[{"role": "user", "content": marker}],
        extra_headers={"x-request-id": "chat-nonstream-1"},
    )
    assert reply.model == "mock/chat"
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    sent = upstream.requests_for("chat-upstream")[-1]
    assert sent["headers"]["authorization"].startswith("Bearer upstream-secret")
    assert sent["body"]["messages"] == [{"role": "user", "content": marker}]


async def test_unknown_fields_vision_parts_and_tools_reach_the_upstream(
    api: openai.AsyncOpenAI, upstream: Upstream, unique
) -> None:
    marker = unique("marker")
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    reply = await api.chat.completions.create(
        model="mock/chat",
        messages=messages,
        tools=tools,
        n=2,
        temperature=0.25,
        extra_body={"top_k": 7, "enable_thinking": False, "vendor_field": {"marker": marker}},
    )
    assert len(reply.choices) == 2
    sent = next(
        r["body"]
        for r in upstream.requests()
        if r["body"].get("vendor_field") == {"marker": marker}
    )
    assert sent["messages"] == messages
    assert sent["tools"] == tools
    assert sent["top_k"] == 7 and sent["enable_thinking"] is False and sent["n"] == 2
    assert sent["temperature"] == 0.25
    assert sent["model"] == "chat-upstream"


async def test_tool_calls_and_reasoning_survive(api: openai.AsyncOpenAI) -> None:
    reply = await api.chat.completions.create(
        model="deepseek-ai/deepseek-r1:671b",
        messages=[{"role": "user", "content": "weather?"}],
        extra_body={"mock": {"tool_call": True, "reasoning": True}},
    )
    message = reply.choices[0].message
    assert message.tool_calls and message.tool_calls[0].function.name == "get_weather"
    assert message.model_extra and message.model_extra["reasoning_content"] == "thinking it over"
    assert reply.model == "deepseek-ai/deepseek-r1:671b"

    stream = await api.chat.completions.create(
        model="deepseek-ai/deepseek-r1:671b",
        messages=[{"role": "user", "content": "weather?"}],
        stream=True,
        extra_body={"mock": {"tool_call": True, "reasoning": True}},
    )
    chunks = [chunk async for chunk in stream]
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in chunks
        if c.choices
    )
    assert reasoning == "thinking it over"
    calls = [
        c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls
    ]
    assert calls[0][0].function.name == "get_weather"
    assert {c.model for c in chunks} == {"deepseek-ai/deepseek-r1:671b"}


async def test_stream_relays_chunks_and_hides_the_usage_chunk_it_asked_for(
    api: openai.AsyncOpenAI, upstream: Upstream, unique
) -> None:
    tag = unique("hidden-usage")
    stream = await api.chat.completions.create(
        model="mock/chat",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        extra_body={"mock": {"chunks": 7, "tag": tag}},
        extra_headers={"x-request-id": "stream-no-usage"},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"word{i} " for i in range(7))
    assert all(c.choices for c in chunks), "the usage-only chunk must not reach this client"
    assert all(c.usage is None for c in chunks)
    sent = next(r for r in upstream.requests() if r["body"].get("mock", {}).get("tag") == tag)
    assert sent["body"]["stream_options"] == {"include_usage": True}


async def test_stream_keeps_usage_when_the_client_asks(api: openai.AsyncOpenAI) -> None:
    stream = await api.chat.completions.create(
        model="mock/chat",
        messages=[{"role": "user", "content": "usage please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


async def test_raw_sse_ends_with_done(client: httpx.AsyncClient, account: Account) -> None:
    response = await client.post(
        "/apiv2/chat/completions",
        headers={"Authorization": f"Bearer {account.key}"},
        json={"model": "mock/chat", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert all(e.startswith(b"data: ") for e in events)


async def test_legacy_completions_stream_and_not(api: openai.AsyncOpenAI) -> None:
    reply = await api.completions.create(model="mock/complete", prompt="once upon")
    assert reply.choices[0].text == "word0 word1 word2 word3 word4"
    assert reply.model == "mock/complete"
    stream = await api.completions.create(model="mock/complete", prompt="once upon", stream=True)
    pieces = [c.choices[0].text async for c in stream if c.choices]
    assert "".join(pieces) == "word0 word1 word2 word3 word4 "


async def test_embeddings_float_and_base64(
    api: openai.AsyncOpenAI, client: httpx.AsyncClient, account: Account
) -> None:
    floats = await api.embeddings.create(
        model="mock/embed", input=["alpha", "beta"], encoding_format="float"
    )
    assert len(floats.data) == 2 and len(floats.data[0].embedding) == 8
    assert floats.model == "mock/embed" and floats.usage.total_tokens == 2
    # The openai client asks for base64 by default and decodes it itself.
    default = await api.embeddings.create(model="mock/embed", input=["alpha", "beta"])
    # The mock's components are multiples of 1/128, exact in float32 and float64 alike.
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    raw = (
        await client.post(
            "/apiv2/embeddings",
            headers={"Authorization": f"Bearer {account.key}"},
            json={"model": "mock/embed", "input": "alpha", "encoding_format": "base64"},
        )
    ).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert list(struct.unpack("<8f", packed)) == floats.data[0].embedding
    assert raw["model"] == "mock/embed"


async def test_rerank_passes_jina_shape(client: httpx.AsyncClient, account: Account) -> None:
    response = await client.post(
        "/apiv2/rerank",
        headers={"Authorization": f"Bearer {account.key}"},
        json={
            "model": "mock/rerank",
            "query": "high energy physics",
            "documents": ["cooking pasta", "high energy collisions", "physics of high energy"],
            "top_n": 2,
            "return_documents": True,
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert [r["index"] for r in body["results"]] == [2, 1]
    assert body["results"][0]["document"] == {"text": "physics of high energy"}
    assert body["model"] == "mock/rerank"


async def test_wrong_model_type_for_endpoint_is_a_clear_400(api: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await api.chat.completions.create(
            model="mock/embed", messages=[{"role": "user", "content": "x"}]
        )
    assert "embedding model" in caught.value.message


async def test_trailing_slash_is_accepted(client: httpx.AsyncClient, account: Account) -> None:
    response = await client.get("/apiv2/models/", headers={"x-api-key": account.key})
    assert response.status_code == 200 and response.json()["object"] == "list"


async def test_probe_answers(client: httpx.AsyncClient) -> None:
    assert (await client.get("/apiv2")).status_code == 200


def test_a_served_stream_reaches_the_client_over_a_socket(server: Server, user_key: str) -> None:
    """uvicorn and httptools between the app and the client: each chunk, then [DONE]."""
    stream = server.openai(user_key).chat.completions.create(
        model="mock/chat",
        messages=[{"role": "user", "content": "over a socket"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"mock": {"chunks": 7}},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"word{i} " for i in range(7))
    assert {c.model for c in chunks} == {"mock/chat"}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
