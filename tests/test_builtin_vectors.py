"""The built-in embeddings and rerank workers, run for real (all-MiniLM-L6-v2 from its package,
on the CPU) and called through the gateway with the real clients."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.stack import Platform, Server, run_worker

QUERY = "How do I reset my password?"
DOCUMENTS = [
    "The weather will be sunny with a light breeze on Monday.",
    "To reset your password, click 'Forgot password' on the login page and follow the e-mail.",
    "Simmer the tomato sauce for twenty minutes before adding the basil.",
    "The office is closed on public holidays.",
]
RELEVANT = 1
#: Workers load torch and the model at start: give them longer than a plain worker.
STARTUP = 180


@pytest.fixture(scope="module")
def embeddings(server: Server, operator: str) -> Iterator[str]:
    with run_worker(server, operator, "builtin:embeddings", timeout=STARTUP):
        yield "hepai/all-minilm-l6-v2"


@pytest.fixture(scope="module")
def rerank(server: Server, operator: str) -> Iterator[str]:
    with run_worker(server, operator, "builtin:rerank", timeout=STARTUP):
        yield "hepai/minilm-l6-cosine-rerank"


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_embeddings_through_the_openai_client(
    server: Server, platform: Platform, embeddings: str, user_key: str
) -> None:
    client = server.openai(user_key)
    raw = client.embeddings.with_raw_response.create(
        model=embeddings, input=[QUERY, *DOCUMENTS], encoding_format="float"
    )
    as_floats = raw.parse()
    vectors = [row.embedding for row in as_floats.data]
    assert [row.index for row in as_floats.data] == list(range(5))
    assert all(len(v) == 384 and math.isclose(np.linalg.norm(v), 1, rel_tol=1e-4) for v in vectors)
    scores = [cosine(vectors[0], v) for v in vectors[1:]]
    assert max(range(4), key=lambda i: scores[i]) == RELEVANT, scores
    assert scores[RELEVANT] > 0.4 > max(s for i, s in enumerate(scores) if i != RELEVANT)
    assert as_floats.usage.prompt_tokens == as_floats.usage.total_tokens > 20

    # The openai client asks for base64 by default and decodes it: the same vectors.
    as_base64 = client.embeddings.create(model=embeddings, input=[QUERY, *DOCUMENTS])
    np.testing.assert_allclose([r.embedding for r in as_base64.data], vectors, atol=1e-6)

    row = platform.usage_row(raw.headers["x-request-id"])
    assert (row["model"], row["status_code"]) == (embeddings, 200)
    assert row["prompt_tokens"] == as_floats.usage.prompt_tokens


def test_concurrent_calls_are_batched_and_each_gets_its_own(
    server: Server, embeddings: str, user_key: str
) -> None:
    texts = [
        f"sentence number {i} about {topic}"
        for i, topic in enumerate(["physics", "cooking", "music", "rain"] * 6)
    ]
    alone = server.openai(user_key).embeddings.create(
        model=embeddings, input=texts[0], encoding_format="float"
    )

    async def all_at_once() -> list[list[float]]:
        async with openai.AsyncOpenAI(
            base_url=server.base_url, api_key=user_key, max_retries=0
        ) as client:
            answers = await asyncio.gather(
                *(
                    client.embeddings.create(model=embeddings, input=t, encoding_format="float")
                    for t in texts
                )
            )
        return [answer.data[0].embedding for answer in answers]

    together = asyncio.run(all_at_once())
    np.testing.assert_allclose(together[0], alone.data[0].embedding, atol=1e-5)
    for text, vector in zip(texts, together, strict=True):
        assert vector != together[0] or text == texts[0]


def test_hepai_client_embeddings(server: Server, embeddings: str, user_key: str) -> None:
    answer = server.hepai(user_key).embeddings.create(model=embeddings, input="neutrino mass")
    assert len(answer.data[0].embedding) == 384


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": [[101, 2054, 102]]}, "input"),
        ({"input": "x", "dimensions": 128}, None),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_bad_embedding_requests_are_400(
    server: Server, embeddings: str, user_key: str, body: dict[str, object], param: str | None
) -> None:
    response = httpx.post(
        f"{server.base_url}/embeddings",
        headers={"authorization": f"Bearer {user_key}"},
        json={"model": embeddings, **body},
    )
    assert response.status_code == 400, response.text


def test_rerank_puts_the_relevant_document_first(
    server: Server, platform: Platform, rerank: str, user_key: str
) -> None:
    response = httpx.post(
        f"{server.base_url}/rerank",
        headers={"authorization": f"Bearer {user_key}"},
        json={
            "model": rerank,
            "query": QUERY,
            "documents": DOCUMENTS,
            "top_n": 2,
            "return_documents": True,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["results"][0]["index"] == RELEVANT
    assert len(body["results"]) == 2
    assert body["results"][0]["document"] == {"text": DOCUMENTS[RELEVANT]}
    assert body["results"][0]["relevance_score"] > body["results"][1]["relevance_score"]
    assert body["usage"]["total_tokens"] > 20
    row = platform.usage_row(response.headers["x-request-id"])
    assert row["total_tokens"] == body["usage"]["total_tokens"]

    objects = [{"text": d} for d in DOCUMENTS]  # the Jina/Cohere document objects
    again = httpx.post(
        f"{server.base_url}/rerank",
        headers={"authorization": f"Bearer {user_key}"},
        json={"model": rerank, "query": QUERY, "documents": objects},
    ).json()
    assert again["results"][0]["index"] == RELEVANT and "document" not in again["results"][0]
    assert len(again["results"]) == len(DOCUMENTS)

    missing = httpx.post(
        f"{server.base_url}/rerank",
        headers={"authorization": f"Bearer {user_key}"},
        json={"model": rerank, "query": QUERY, "documents": DOCUMENTS, "top_n": 0},
    )
    assert missing.status_code == 400


def build_tiny_cross_encoder(directory: Path) -> Path:
    """A two-layer BERT cross-encoder with random weights and a small word vocabulary, built
    here, so the cross-encoder path is exercised without any downloaded model."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = sorted(set(" ".join([QUERY, *DOCUMENTS]).lower().replace("'", " ").split()))
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=128)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
        initializer_range=0.5,  # spread the random scores, so they tell models apart
    )
    BertForSequenceClassification(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_a_cross_encoder_from_a_directory_is_used(
    server: Server,
    platform: Platform,
    unique: Callable[[str], str],
    user_key: str,
    operator: str,
    tmp_path: Path,
) -> None:
    from sentence_transformers import CrossEncoder

    model_dir = build_tiny_cross_encoder(tmp_path / "tiny-cross-encoder")
    expected = CrossEncoder(str(model_dir), device="cpu").predict([(QUERY, d) for d in DOCUMENTS])
    name = unique("hepai/tiny-cross-encoder")
    env = {
        "HEPAI_SERVER_RERANK_MODEL_PATH": str(model_dir),
        "HEPAI_SERVER_RERANK_MODEL_NAME": name,
    }
    with run_worker(server, operator, "builtin:rerank", env=env, timeout=STARTUP):
        body = httpx.post(
            f"{server.base_url}/rerank",
            headers={"authorization": f"Bearer {user_key}"},
            json={"model": name, "query": QUERY, "documents": DOCUMENTS},
        ).json()
    scores = {r["index"]: r["relevance_score"] for r in body["results"]}
    np.testing.assert_allclose([scores[i] for i in range(4)], expected, rtol=1e-4)
    assert body["model"] == name
