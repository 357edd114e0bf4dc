"""The hepai client (hepai==1.4.11 on openai 2.x), as the platform's user guide uses it."""

from __future__ import annotations

import pytest
from hepai import HepAI

from tests.stack import Server


@pytest.fixture
def hepai(server: Server, user_key: str, monkeypatch: pytest.MonkeyPatch) -> HepAI:
    monkeypatch.setenv("HEPAI_API_KEY", user_key)  # the way the user guide passes the key
    return server.hepai()


def test_user_guide_workflow(hepai: HepAI) -> None:
    ids = [model.id for model in hepai.models.list()]
    assert "mock/chat" in ids and "deepseek-ai/deepseek-r1:671b" in ids

    reply = hepai.chat.completions.create(
        model="mock/chat", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content == "word0 word1 word2 word3 word4"

    stream = hepai.chat.completions.create(
        model="mock/chat", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "word0 word1 word2 word3 word4 "

    embedding = hepai.embeddings.create(model="mock/embed", input="hello")
    assert len(embedding.data[0].embedding) == 8


def test_hepai_client_without_key_is_refused(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openai

    monkeypatch.delenv("HEPAI_API_KEY", raising=False)
    with pytest.raises(openai.APIStatusError) as caught:
        server.hepai().models.list()
    assert caught.value.status_code == 401
