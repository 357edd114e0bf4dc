"""The official openai client against the real server: models, chat, completions, embeddings."""

from __future__ import annotations

import base64
import struct

import httpx
import openai
import pytest

from tests.stack import MockProcess, Server


def client(server: Server, key: str) -> openai.OpenAI:
    return server.openai(key)


def test_lists_models_with_slashes_and_colons(server: Server, user_key: str) -> None:
    models = client(server, user_key).models.list()
    ids = {model.id for model in models}
    assert {"mock/chat", "deepseek-ai/deepseek-r1:671b", "mock/embed"} <= ids
    row = next(model for model in models if model.id == "mock/chat")
    assert row.object == "model" and row.owned_by == "mock"
    assert "openai/gpt-4o" not in ids, "a provider without its key must not be listed"


def test_retrieves_one_model_by_path_id(server: Server, user_key: str) -> None:
    model = client(server, user_key).models.retrieve("deepseek-ai/deepseek-r1:671b")
    assert model.id == "deepseek-ai/deepseek-r1:671b"


@pytest.mark.parametrize("prefix", ["/apiv2", "/v1", "/apiv2/v1"])
def test_every_prefix_serves_the_api(server: Server, user_key: str, prefix: str) -> None:
    api = server.openai(user_key, prefix=prefix)
    reply = api.chat.completions.create(
        model="mock/chat", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content == "word0 word1 word2 word3 word4"


def test_chat_returns_our_model_id_and_usage(server: Server, user_key: str, mock: MockProcess):
    reply = client(server, user_key).chat.completions.create(
        model="mock/chat",
        messages=[{"role": "user", "content": "count please"}],
        extra_headers={"x-request-id": "chat-nonstream-1"},
    )
    assert reply.model == "mock/chat"
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    sent = mock.requests_for("chat-upstream")[-1]
    assert sent["headers"]["authorization"].startswith("Bearer upstream-secret")
    assert sent["body"]["messages"] == [{"role": "user", "content": "count please"}]


def test_unknown_fields_vision_parts_and_tools_reach_the_upstream(
    server: Server, user_key: str, mock: MockProcess, unique
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
    reply = client(server, user_key).chat.completions.create(
        model="mock/chat",
        messages=messages,
        tools=tools,
        n=2,
        temperature=0.25,
        extra_body={"top_k": 7, "enable_thinking": False, "vendor_field": {"marker": marker}},
    )
    assert len(reply.choices) == 2
    sent = next(
        r["body"] for r in mock.requests() if r["body"].get("vendor_field") == {"marker": marker}
    )
    assert sent["messages"] == messages
    assert sent["tools"] == tools
    assert sent["top_k"] == 7 and sent["enable_thinking"] is False and sent["n"] == 2
    assert sent["temperature"] == 0.25
    assert sent["model"] == "chat-upstream"


def test_tool_calls_and_reasoning_survive(server: Server, user_key: str) -> None:
    api = client(server, user_key)
    reply = api.chat.completions.create(
        model="deepseek-ai/deepseek-r1:671b",
        messages=[{"role": "user", "content": "weather?"}],
        extra_body={"mock": {"tool_call": True, "reasoning": True}},
    )
    message = reply.choices[0].message
    assert message.tool_calls and message.tool_calls[0].function.name == "get_weather"
    assert message.model_extra and message.model_extra["reasoning_content"] == "thinking it over"
    assert reply.model == "deepseek-ai/deepseek-r1:671b"

    stream = api.chat.completions.create(
        model="deepseek-ai/deepseek-r1:671b",
        messages=[{"role": "user", "content": "weather?"}],
        stream=True,
        extra_body={"mock": {"tool_call": True, "reasoning": True}},
    )
    chunks = list(stream)
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


def test_stream_relays_chunks_and_hides_the_usage_chunk_it_asked_for(
    server: Server, user_key: str, mock: MockProcess
) -> None:
    stream = client(server, user_key).chat.completions.create(
        model="mock/chat",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        extra_body={"mock": {"chunks": 7, "tag": "hidden-usage"}},
        extra_headers={"x-request-id": "stream-no-usage"},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"word{i} " for i in range(7))
    assert all(c.choices for c in chunks), "the usage-only chunk must not reach this client"
    assert all(c.usage is None for c in chunks)
    sent = next(
        r for r in mock.requests() if r["body"].get("mock", {}).get("tag") == "hidden-usage"
    )
    assert sent["body"]["stream_options"] == {"include_usage": True}


def test_stream_keeps_usage_when_the_client_asks(server: Server, user_key: str) -> None:
    stream = client(server, user_key).chat.completions.create(
        model="mock/chat",
        messages=[{"role": "user", "content": "usage please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def test_raw_sse_ends_with_done(server: Server, user_key: str) -> None:
    with httpx.stream(
        "POST",
        server.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {user_key}"},
        json={"model": "mock/chat", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read()
    events = [e for e in body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert all(e.startswith(b"data: ") for e in events)


def test_legacy_completions_stream_and_not(server: Server, user_key: str) -> None:
    api = client(server, user_key)
    reply = api.completions.create(model="mock/complete", prompt="once upon")
    assert reply.choices[0].text == "word0 word1 word2 word3 word4"
    assert reply.model == "mock/complete"
    pieces = [
        c.choices[0].text
        for c in api.completions.create(model="mock/complete", prompt="once upon", stream=True)
        if c.choices
    ]
    assert "".join(pieces) == "word0 word1 word2 word3 word4 "


def test_embeddings_float_and_base64(server: Server, user_key: str, mock: MockProcess) -> None:
    api = client(server, user_key)
    floats = api.embeddings.create(
        model="mock/embed", input=["alpha", "beta"], encoding_format="float"
    )
    assert len(floats.data) == 2 and len(floats.data[0].embedding) == 8
    assert floats.model == "mock/embed" and floats.usage.total_tokens == 2
    # The openai client asks for base64 by default and decodes it itself.
    default = api.embeddings.create(model="mock/embed", input=["alpha", "beta"])
    # The mock's components are multiples of 1/128, exact in float32 and float64 alike.
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    raw = httpx.post(
        server.base_url + "/embeddings",
        headers={"Authorization": f"Bearer {user_key}"},
        json={"model": "mock/embed", "input": "alpha", "encoding_format": "base64"},
    ).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert list(struct.unpack("<8f", packed)) == floats.data[0].embedding
    assert raw["model"] == "mock/embed"


def test_rerank_passes_jina_shape(server: Server, user_key: str) -> None:
    response = httpx.post(
        server.base_url + "/rerank",
        headers={"Authorization": f"Bearer {user_key}"},
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


def test_wrong_model_type_for_endpoint_is_a_clear_400(server: Server, user_key: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(server, user_key).chat.completions.create(
            model="mock/embed", messages=[{"role": "user", "content": "x"}]
        )
    assert "embedding model" in caught.value.message


def test_trailing_slash_is_accepted(server: Server, user_key: str) -> None:
    response = httpx.get(server.base_url + "/models/", headers={"x-api-key": user_key})
    assert response.status_code == 200 and response.json()["object"] == "list"


def test_probe_answers(server: Server) -> None:
    assert httpx.get(server.base_url).status_code == 200
