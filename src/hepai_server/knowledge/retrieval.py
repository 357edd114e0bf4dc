"""Retrieval: a query's best chunks, by vectors and full text fused, then optionally reranked.

Each ranking (the vectors of each embedding model the searched stores use, and BM25 over
their terms) hands its best ``candidates`` chunks to reciprocal rank fusion; a rerank model,
when one is given, then scores the best of the fused list against the query and orders it by
that. Scores run from 0 to 1: fused scores as fusion.py scales them, rerank scores as the
model gives them (passed through a logistic function when a cross-encoder gives logits).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from hepai_server.knowledge.fusion import fuse
from hepai_server.knowledge.index import ChunkIndex, StoredChunk, Vector
from hepai_server.knowledge.lexical import Segmenter

Mode = Literal["hybrid", "dense", "lexical"]
#: How much of a query its full-text terms come from.
QUERY_CHARS = 4000
#: Reranks ``documents`` against ``query``: one score each.
Rerank = Callable[[str, list[str]], Awaitable[list[float]]]


@dataclass(frozen=True, slots=True)
class Ranked:
    chunk: StoredChunk
    score: float


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    #: The stores to search, grouped by embedding model: the query's vector for each group.
    vectors: Sequence[tuple[Sequence[str], Vector]]
    limit: int
    candidates: int = 50
    file_ids: Collection[str] | None = None
    mode: Mode = "hybrid"

    @property
    def store_ids(self) -> list[str]:
        return [store_id for stores, _ in self.vectors for store_id in stores]


def unit_score(value: float) -> float:
    """A score in [0, 1]: logits and cosines outside it go through the logistic function."""
    return value if 0.0 <= value <= 1.0 else 1.0 / (1.0 + math.exp(-value))


async def retrieve(
    index: ChunkIndex, segmenter: Segmenter, query: Query, rerank: Rerank | None = None
) -> list[Ranked]:
    """The query's best chunks, best first, at most ``query.limit``."""
    rankings: list[list[int]] = []
    if query.mode in ("hybrid", "dense"):
        for stores, vector in query.vectors:
            rankings.append(await index.nearest(stores, vector, query.candidates, query.file_ids))
    if query.mode in ("hybrid", "lexical"):
        # Segmenting is CPU work (jieba): off the event loop, and on the query's head only, so
        # a megabyte of query costs no more than a long question.
        terms = await asyncio.to_thread(segmenter.query_terms, query.text[:QUERY_CHARS])
        rankings.append(
            await index.matching(query.store_ids, terms, query.candidates, query.file_ids)
        )
    fused = fuse(rankings)
    keep = fused[: query.candidates if rerank is not None else query.limit]
    chunks = await index.chunks([chunk_id for chunk_id, _ in keep])
    ranked = [Ranked(chunks[i], score) for i, score in keep if i in chunks]
    if rerank is not None and ranked:
        scores = await rerank(query.text, [r.chunk.text for r in ranked])
        ranked = [Ranked(r.chunk, unit_score(s)) for r, s in zip(ranked, scores, strict=True)]
        ranked.sort(key=lambda r: -r.score)
    return ranked[: query.limit]
