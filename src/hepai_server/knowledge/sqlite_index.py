"""SqliteIndex: the embedded chunk index, one SQLite file in the data directory.

Terms go to an FTS5 table (SQLite's own full-text engine, ranked with its ``bm25()``); vectors
are kept as float32 blobs and searched exactly, by one matrix product over a store's vectors
held in memory. Exact search needs no index to build or tune and at the sizes one machine
serves (100k chunks of 384 dimensions are 150 MB and a few milliseconds to scan,
benchmarks/RESULTS.md) it is as fast as an approximate one. Each process keeps the matrices of
the stores it searched, and reloads one when the store's revision, bumped in the same
transaction as every change to its chunks, has moved: several processes on one machine share
the file and see each other's changes.

A file of its own rather than tables in the platform's database: FTS5 tables are virtual
tables that Alembic cannot describe, and ingestion's long write transactions stay off the
database every request's usage row goes to.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from hepai_server.knowledge.index import IndexedChunk, StoredChunk, Vector

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    store_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    heading TEXT NOT NULL,
    page INTEGER,
    tokens INTEGER NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_store_file ON chunks (store_id, file_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_terms USING fts5 (terms, tokenize = 'unicode61');
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_terms_vocab USING fts5vocab (chunk_terms, 'row');
CREATE TABLE IF NOT EXISTS revisions (store_id TEXT PRIMARY KEY, revision INTEGER NOT NULL);
"""
#: Query terms in more chunks than this share of all (and this many at least) are left out of
#: the match: they weigh next to nothing in BM25 (an idf under log 3), and matching them would
#: have FTS5 score most of the index (a query's time at 100k chunks fell from hundreds of
#: milliseconds to tens, benchmarks/RESULTS.md).
COMMON_SHARE, COMMON_FLOOR = 0.25, 5000


@dataclass(frozen=True, slots=True)
class _Matrix:
    revision: int
    ids: npt.NDArray[np.int64]
    files: npt.NDArray[np.str_]
    vectors: npt.NDArray[np.float32]


class SqliteIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._matrices: dict[str, _Matrix] = {}
        self._lock = threading.Lock()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode (writes take BEGIN IMMEDIATE themselves), closed
        after use."""
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=30000")
            yield connection
        finally:
            connection.close()

    async def prepare(self) -> None:
        def work() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as connection:
                connection.executescript(SCHEMA)

        await asyncio.to_thread(work)

    async def replace_file(
        self, store_id: str, file_id: str, chunks: Sequence[IndexedChunk]
    ) -> None:
        def work(connection: sqlite3.Connection) -> None:
            _delete(connection, "store_id = ? AND file_id = ?", (store_id, file_id))
            for chunk in chunks:
                cursor = connection.execute(
                    "INSERT INTO chunks (store_id, file_id, ordinal, text, heading, page, "
                    "tokens, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        store_id,
                        file_id,
                        chunk.ordinal,
                        chunk.text,
                        chunk.heading,
                        chunk.page,
                        chunk.tokens,
                        chunk.vector.astype(np.float32).tobytes(),
                    ),
                )
                connection.execute(
                    "INSERT INTO chunk_terms (rowid, terms) VALUES (?, ?)",
                    (cursor.lastrowid, " ".join(chunk.terms)),
                )
            _bump(connection, store_id)

        await self._write(work)

    async def remove_file(self, store_id: str, file_id: str) -> None:
        def work(connection: sqlite3.Connection) -> None:
            _delete(connection, "store_id = ? AND file_id = ?", (store_id, file_id))
            _bump(connection, store_id)

        await self._write(work)

    async def remove_store(self, store_id: str) -> None:
        def work(connection: sqlite3.Connection) -> None:
            _delete(connection, "store_id = ?", (store_id,))
            connection.execute("DELETE FROM revisions WHERE store_id = ?", (store_id,))

        await self._write(work)

    async def _write(self, work: Callable[[sqlite3.Connection], None]) -> None:
        def run() -> None:
            with self._connect() as connection:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    work(connection)
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise

        await asyncio.to_thread(run)

    async def nearest(
        self,
        store_ids: Sequence[str],
        vector: Vector,
        limit: int,
        file_ids: Collection[str] | None = None,
    ) -> list[int]:
        def work() -> list[int]:
            with self._connect() as connection:
                matrices = [self._matrix(connection, store_id) for store_id in store_ids]
            found: list[tuple[float, int]] = []
            for matrix in matrices:
                if not len(matrix.ids):
                    continue
                scores = matrix.vectors @ vector.astype(np.float32)
                if file_ids is not None:
                    scores = np.where(np.isin(matrix.files, list(file_ids)), scores, -np.inf)
                top = min(limit, len(scores))
                best = np.argpartition(-scores, top - 1)[:top]
                found += [(float(scores[i]), int(matrix.ids[i])) for i in best]
            found = [pair for pair in found if pair[0] != -np.inf]
            found.sort(key=lambda pair: (-pair[0], pair[1]))
            return [chunk_id for _, chunk_id in found[:limit]]

        return await asyncio.to_thread(work)

    def _matrix(self, connection: sqlite3.Connection, store_id: str) -> _Matrix:
        row = connection.execute(
            "SELECT revision FROM revisions WHERE store_id = ?", (store_id,)
        ).fetchone()
        revision = row[0] if row else 0
        with self._lock:
            cached = self._matrices.get(store_id)
        if cached is not None and cached.revision == revision:
            return cached
        rows = connection.execute(
            "SELECT id, file_id, vector FROM chunks WHERE store_id = ? ORDER BY id", (store_id,)
        ).fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        files = np.array([r[1] for r in rows], dtype=np.str_)
        vectors = (
            np.vstack([np.frombuffer(r[2], dtype=np.float32) for r in rows])
            if rows
            else np.zeros((0, 1), dtype=np.float32)
        )
        matrix = _Matrix(revision, ids, files, vectors)
        with self._lock:
            self._matrices[store_id] = matrix
        return matrix

    async def matching(
        self,
        store_ids: Sequence[str],
        terms: Sequence[str],
        limit: int,
        file_ids: Collection[str] | None = None,
    ) -> list[int]:
        if not terms or not store_ids:
            return []
        stores = ", ".join("?" * len(store_ids))
        sql = (
            "SELECT chunks.id FROM chunk_terms JOIN chunks ON chunks.id = chunk_terms.rowid "
            f"WHERE chunk_terms MATCH ? AND chunks.store_id IN ({stores})"
        )
        parameters: list[object] = [*store_ids]
        if file_ids is not None:
            sql += f" AND chunks.file_id IN ({', '.join('?' * len(file_ids))})"
            parameters += list(file_ids)
        # bm25() is lower for better matches; the id breaks ties as the other engine does.
        sql += " ORDER BY bm25(chunk_terms), chunks.id LIMIT ?"
        parameters.append(limit)

        def work() -> list[int]:
            with self._connect() as connection:
                kept = _uncommon(connection, list(dict.fromkeys(terms)))
                query = " OR ".join('"' + term.replace('"', '""') + '"' for term in kept)
                return [row[0] for row in connection.execute(sql, [query, *parameters])]

        return await asyncio.to_thread(work)

    async def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        if not ids:
            return {}

        def work() -> dict[int, StoredChunk]:
            with self._connect() as connection:
                rows = connection.execute(
                    "SELECT id, store_id, file_id, ordinal, text, heading, page FROM chunks "
                    f"WHERE id IN ({', '.join('?' * len(ids))})",
                    list(ids),
                ).fetchall()
            return {row[0]: StoredChunk(*row) for row in rows}

        return await asyncio.to_thread(work)

    async def file_chunks(self, store_id: str, file_id: str) -> list[StoredChunk]:
        def work() -> list[StoredChunk]:
            with self._connect() as connection:
                rows = connection.execute(
                    "SELECT id, store_id, file_id, ordinal, text, heading, page FROM chunks "
                    "WHERE store_id = ? AND file_id = ? ORDER BY ordinal",
                    (store_id, file_id),
                ).fetchall()
            return [StoredChunk(*row) for row in rows]

        return await asyncio.to_thread(work)

    async def count(self, store_id: str, file_id: str | None = None) -> int:
        sql, parameters = "SELECT count(*) FROM chunks WHERE store_id = ?", [store_id]
        if file_id is not None:
            sql += " AND file_id = ?"
            parameters.append(file_id)

        def work() -> int:
            with self._connect() as connection:
                return int(connection.execute(sql, parameters).fetchone()[0])

        return await asyncio.to_thread(work)

    async def close(self) -> None:
        with self._lock:
            self._matrices.clear()


def _uncommon(connection: sqlite3.Connection, terms: list[str]) -> list[str]:
    """The terms worth matching (see COMMON_SHARE); the rarest one if all are common."""
    marks = ", ".join("?" * len(terms))
    counts = dict(
        connection.execute(
            f"SELECT term, doc FROM chunk_terms_vocab WHERE term IN ({marks})", terms
        ).fetchall()
    )
    total = connection.execute("SELECT count(*) FROM chunks").fetchone()[0]
    limit = max(COMMON_FLOOR, total * COMMON_SHARE)
    kept = [term for term in terms if counts.get(term, 0) <= limit]
    return kept or [min(terms, key=lambda term: counts.get(term, 0))]


def _delete(connection: sqlite3.Connection, where: str, parameters: tuple[str, ...]) -> None:
    connection.execute(
        f"DELETE FROM chunk_terms WHERE rowid IN (SELECT id FROM chunks WHERE {where})",
        parameters,
    )
    connection.execute(f"DELETE FROM chunks WHERE {where}", parameters)


def _bump(connection: sqlite3.Connection, store_id: str) -> None:
    connection.execute(
        "INSERT INTO revisions (store_id, revision) VALUES (?, 1) "
        "ON CONFLICT (store_id) DO UPDATE SET revision = revision + 1",
        (store_id,),
    )
