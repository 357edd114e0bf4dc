"""Rerank: the built-in worker that orders documents by relevance to a query (/rerank).

With ``HEPAI_SERVER_RERANK_MODEL_PATH`` set to a sentence-transformers CrossEncoder directory
(bge-reranker-v2-m3 in production) it scores each (query, document) pair with that model. Unset,
it falls back to what ships offline: the cosine similarity of the packaged all-MiniLM-L6-v2
embeddings, a bi-encoder, which is why its default model id says so
(``hepai/minilm-l6-cosine-rerank``): it ranks well-separated topics, not fine distinctions.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from hepai_server.config import Settings
from hepai_server.worker.builtin.embeddings import texts_of
from hepai_server.worker.builtin.encoder import TextEncoder, offline, packaged_minilm
from hepai_server.worker.model import Worker, remote


class CrossEncoderScorer:
    def __init__(self, path: Path) -> None:
        offline()
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(str(path), device="cpu", local_files_only=True)

    def score(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        scores = self.model.predict([(query, d) for d in documents], show_progress_bar=False)
        tokenized: Any = self.model.tokenizer(
            [query] * len(documents), documents, add_special_tokens=False
        )
        tokens = sum(len(ids) for ids in tokenized["input_ids"])
        return [float(s) for s in np.asarray(scores).reshape(-1)], tokens


def documents_of(value: Any) -> list[str]:
    """Documents as strings, or as Jina/Cohere objects with a ``text``."""
    if isinstance(value, list):
        value = [d.get("text") if isinstance(d, dict) else d for d in value]
    return texts_of(value, param="documents")


class Rerank(Worker):
    """Orders documents by relevance to a query (the Jina/Cohere /rerank shape)."""

    description = "Document reranking"
    concurrency = 32

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self.name = settings.rerank_model_name
        self.permission = settings.builtin_permission
        self.cross: CrossEncoderScorer | None = None
        self.encoder: TextEncoder | None = None
        if settings.rerank_model_path is not None:
            self.cross = CrossEncoderScorer(settings.rerank_model_path)
        else:
            path = settings.embedding_model_path or packaged_minilm()
            self.encoder = TextEncoder(path, batch_size=settings.embedding_batch_size)

    async def scores(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        if self.cross is not None:
            return await asyncio.to_thread(self.cross.score, query, documents)
        assert self.encoder is not None
        vectors, tokens = await self.encoder.encode([query, *documents])
        return [float(x) for x in vectors[1:] @ vectors[0]], tokens

    @remote
    async def rerank(self, **request: Any) -> dict[str, Any]:
        """``{model, query, documents, top_n, return_documents}`` → ``{results, usage}``."""
        query = request.get("query")
        if not isinstance(query, str) or not query:
            raise ValueError("'query' must be a non-empty string")
        documents = documents_of(request.get("documents"))
        top_n = request.get("top_n")
        if top_n is not None and (
            isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1
        ):
            raise ValueError("'top_n' must be a positive integer")
        scores, tokens = await self.scores(query, documents)
        order = sorted(range(len(documents)), key=lambda i: -scores[i])[: top_n or len(documents)]
        results: list[dict[str, Any]] = []
        for index in order:
            row: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
            if request.get("return_documents"):
                row["document"] = {"text": documents[index]}
            results.append(row)
        return {
            "id": f"rerank-{secrets.token_hex(12)}",
            "model": self.name,
            "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
