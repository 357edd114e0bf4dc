"""ChunkIndex: where chunks, their vectors and their terms are kept and searched.

Two engines implement it: ``SqliteIndex`` (the embedded default: a SQLite file in the data
directory, FTS5 for the terms and an exact in-memory scan for the vectors) and ``PgvectorIndex``
(the platform's PostgreSQL with pgvector: an HNSW index for the vectors, a postings table for
the terms), for deployments of several replicas. Each search returns chunk ids, best first;
retrieval.py fuses and reranks them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class IndexedChunk:
    """A chunk on its way into the index."""

    ordinal: int
    text: str
    heading: str
    page: int | None
    tokens: int
    #: Its search terms (lexical.Segmenter.terms of its indexed text).
    terms: list[str]
    #: Its unit-length embedding.
    vector: Vector


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A chunk as search hands it back."""

    id: int
    store_id: str
    file_id: str
    ordinal: int
    text: str
    heading: str
    page: int | None


class ChunkIndex(Protocol):
    async def prepare(self) -> None:
        """Create what the engine needs (tables, indexes), if it is not there yet."""

    async def replace_file(
        self, store_id: str, file_id: str, chunks: Sequence[IndexedChunk]
    ) -> None:
        """The file's chunks in the store become ``chunks``: run again, it does the same."""

    async def remove_file(self, store_id: str, file_id: str) -> None: ...

    async def remove_store(self, store_id: str) -> None: ...

    async def nearest(
        self,
        store_ids: Sequence[str],
        vector: Vector,
        limit: int,
        file_ids: Collection[str] | None = None,
    ) -> list[int]:
        """Chunk ids by cosine similarity to ``vector``, best first."""

    async def matching(
        self,
        store_ids: Sequence[str],
        terms: Sequence[str],
        limit: int,
        file_ids: Collection[str] | None = None,
    ) -> list[int]:
        """Chunk ids by BM25 of ``terms``, best first."""

    async def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]: ...

    async def file_chunks(self, store_id: str, file_id: str) -> list[StoredChunk]:
        """The file's chunks in the store, in reading order."""

    async def count(self, store_id: str, file_id: str | None = None) -> int: ...

    async def close(self) -> None: ...


def as_vector(values: Sequence[float] | Vector) -> Vector:
    """A unit-length float32 vector (embedding models mostly give these already)."""
    vector = np.asarray(values, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector
