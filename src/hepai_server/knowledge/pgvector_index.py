"""PgvectorIndex: the chunk index in the platform's own PostgreSQL, with pgvector.

For deployments of several replicas: every replica reads and writes the same tables, so a
store ingested by one is searched by all, and nothing but the database they already share is
needed. Vectors are searched through an HNSW index (cosine distance); terms are kept in a
postings table, (store, term, chunk, frequency), and ranked by BM25 computed in SQL with the
same constants as the embedded engine, the collection statistics taken over the stores
searched.

An HNSW index is shared by every store, and PostgreSQL filters its candidates after the
index gave them (pgvector 0.6 has no iterative scans): when a search of a few small stores
among many large ones finds fewer chunks than asked for, it is run again exactly, past the
index, over those stores' chunks only.

The tables carry the vectors' dimension in their names (``kb_chunks_384``, made when the
first chunks of that dimension arrive): a store keeps the vectors of the model it was made
with, and stores of models of several dimensions coexist. Chunk ids come from one sequence,
so they are unique across the tables.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from hepai_server.knowledge.index import IndexedChunk, StoredChunk, Vector
from hepai_server.knowledge.lexical import K1, B

T = TypeVar("T")
#: Candidates the HNSW index looks at, at least (pgvector's default is 40).
EF_SEARCH = 100


def vector_literal(vector: Vector) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


class PgvectorIndex:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: Dimensions whose tables exist (read at prepare, added to as they are made).
        self.dimensions: set[int] = set()

    async def _run(self, work: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.engine.begin() as connection:
                return work(connection)

        return await asyncio.to_thread(run)

    async def prepare(self) -> None:
        def work(connection: Connection) -> set[int]:
            # One replica at a time: CREATE ... IF NOT EXISTS races with itself.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4260015)")
            connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
            connection.exec_driver_sql("CREATE SEQUENCE IF NOT EXISTS kb_chunk_ids")
            rows = connection.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'kb\\_chunks\\_%%'"
            )
            return {int(name.rsplit("_", 1)[1]) for (name,) in rows}

        self.dimensions = await self._run(work)

    def _make_tables(self, connection: Connection, dimension: int) -> None:
        chunks, terms = f"kb_chunks_{dimension}", f"kb_terms_{dimension}"
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4260015)")
        for statement in (
            f"""CREATE TABLE IF NOT EXISTS {chunks} (
                id BIGINT PRIMARY KEY DEFAULT nextval('kb_chunk_ids'),
                store_id TEXT NOT NULL,
                file_id TEXT NOT NULL,
                ordinal INTEGER NOT NULL,
                text TEXT NOT NULL,
                heading TEXT NOT NULL,
                page INTEGER,
                tokens INTEGER NOT NULL,
                length INTEGER NOT NULL,
                embedding vector({dimension}) NOT NULL)""",
            f"CREATE INDEX IF NOT EXISTS {chunks}_store_file ON {chunks} (store_id, file_id)",
            f"CREATE INDEX IF NOT EXISTS {chunks}_hnsw ON {chunks} "
            "USING hnsw (embedding vector_cosine_ops)",
            f"""CREATE TABLE IF NOT EXISTS {terms} (
                store_id TEXT NOT NULL,
                term TEXT NOT NULL,
                chunk_id BIGINT NOT NULL REFERENCES {chunks} (id) ON DELETE CASCADE,
                tf INTEGER NOT NULL,
                PRIMARY KEY (store_id, term, chunk_id))""",
            f"CREATE INDEX IF NOT EXISTS {terms}_chunk ON {terms} (chunk_id)",
        ):
            connection.exec_driver_sql(statement)

    def _delete(self, connection: Connection, where: str, parameters: tuple[str, ...]) -> None:
        for dimension in sorted(self.dimensions):
            connection.exec_driver_sql(
                f"DELETE FROM kb_chunks_{dimension} WHERE {where}", parameters
            )

    async def replace_file(
        self, store_id: str, file_id: str, chunks: Sequence[IndexedChunk]
    ) -> None:
        dimension = len(chunks[0].vector) if chunks else None
        if dimension is not None and dimension not in self.dimensions:
            await self._run(lambda c: self._make_tables(c, dimension))
            self.dimensions.add(dimension)
        table, terms_table = f"kb_chunks_{dimension}", f"kb_terms_{dimension}"

        def work(connection: Connection) -> None:
            self._delete(connection, "store_id = %s AND file_id = %s", (store_id, file_id))
            if not chunks:
                return
            ids = [
                row[0]
                for row in connection.exec_driver_sql(
                    "SELECT nextval('kb_chunk_ids') FROM generate_series(1, %s)", (len(chunks),)
                )
            ]
            raw: Any = connection.connection.driver_connection
            with raw.cursor() as cursor:
                with cursor.copy(
                    f"COPY {table} (id, store_id, file_id, ordinal, text, heading, page, tokens, "
                    "length, embedding) FROM STDIN"
                ) as copy:
                    for chunk_id, chunk in zip(ids, chunks, strict=True):
                        copy.write_row(
                            (
                                chunk_id,
                                store_id,
                                file_id,
                                chunk.ordinal,
                                chunk.text.replace("\x00", ""),
                                chunk.heading.replace("\x00", ""),
                                chunk.page,
                                chunk.tokens,
                                len(chunk.terms),
                                vector_literal(chunk.vector),
                            )
                        )
                with cursor.copy(
                    f"COPY {terms_table} (store_id, term, chunk_id, tf) FROM STDIN"
                ) as copy:
                    for chunk_id, chunk in zip(ids, chunks, strict=True):
                        for term, tf in Counter(chunk.terms).items():
                            copy.write_row((store_id, term, chunk_id, tf))

        await self._run(work)

    async def remove_file(self, store_id: str, file_id: str) -> None:
        await self._run(
            lambda c: self._delete(c, "store_id = %s AND file_id = %s", (store_id, file_id))
        )

    async def remove_store(self, store_id: str) -> None:
        await self._run(lambda c: self._delete(c, "store_id = %s", (store_id,)))

    async def nearest(
        self,
        store_ids: Sequence[str],
        vector: Vector,
        limit: int,
        file_ids: Collection[str] | None = None,
    ) -> list[int]:
        if not store_ids or len(vector) not in self.dimensions:
            return []
        table = f"kb_chunks_{len(vector)}"
        where = "store_id = ANY(%s)"
        parameters: list[Any] = [list(store_ids)]
        if file_ids is not None:
            where += " AND file_id = ANY(%s)"
            parameters.append(list(file_ids))
        sql = f"SELECT id FROM {table} WHERE {where} ORDER BY embedding <=> %s::vector, id LIMIT %s"
        parameters += [vector_literal(vector), limit]

        def work(connection: Connection) -> list[int]:
            ef = min(1000, max(EF_SEARCH, 2 * limit))
            connection.exec_driver_sql(f"SET LOCAL hnsw.ef_search = {ef}")
            found = [row[0] for row in connection.exec_driver_sql(sql, tuple(parameters))]
            if len(found) < limit:
                available = connection.exec_driver_sql(
                    f"SELECT count(*) FROM {table} WHERE {where}", tuple(parameters[:-2])
                ).scalar_one()
                if available > len(found):
                    connection.exec_driver_sql("SET LOCAL enable_indexscan = off")
                    found = [row[0] for row in connection.exec_driver_sql(sql, tuple(parameters))]
            return found

        return await self._run(work)

    async def matching(
        self,
        store_ids: Sequence[str],
        terms: Sequence[str],
        limit: int,
        file_ids: Collection[str] | None = None,
    ) -> list[int]:
        if not terms or not store_ids:
            return []
        parameters = {
            "terms": list(dict.fromkeys(terms)),
            "stores": list(store_ids),
            "files": list(file_ids or ()),
            "limit": limit,
        }
        queries = [self._bm25(dimension, file_ids is not None) for dimension in self.dimensions]
        if not queries:
            return []

        def work(connection: Connection) -> list[int]:
            found: list[tuple[float, int]] = []
            for sql in queries:
                found += [(row[1], row[0]) for row in connection.exec_driver_sql(sql, parameters)]
            found.sort(key=lambda pair: (-pair[0], pair[1]))
            return [chunk_id for _, chunk_id in found[:limit]]

        return await self._run(work)

    @staticmethod
    def _bm25(dimension: int, by_file: bool) -> str:
        chunks, postings = f"kb_chunks_{dimension}", f"kb_terms_{dimension}"
        files = " AND c.file_id = ANY(%(files)s)" if by_file else ""
        return f"""
            WITH q(term) AS (SELECT unnest(%(terms)s::text[])),
            stats AS (
                SELECT count(*)::float8 AS n, coalesce(avg(length), 1)::float8 AS avgdl
                FROM {chunks} WHERE store_id = ANY(%(stores)s)),
            df AS (
                SELECT p.term, count(*)::float8 AS df FROM {postings} p JOIN q ON q.term = p.term
                WHERE p.store_id = ANY(%(stores)s) GROUP BY p.term)
            SELECT p.chunk_id, sum(
                greatest(ln((stats.n - df.df + 0.5) / (df.df + 0.5)), 1e-6) * p.tf * {K1 + 1}
                / (p.tf + {K1} * ({1 - B} + {B} * c.length / stats.avgdl))
            ) AS score
            FROM {postings} p
            JOIN df ON df.term = p.term
            JOIN {chunks} c ON c.id = p.chunk_id
            CROSS JOIN stats
            WHERE p.store_id = ANY(%(stores)s){files}
            GROUP BY p.chunk_id
            ORDER BY score DESC, p.chunk_id
            LIMIT %(limit)s"""

    async def chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        if not ids or not self.dimensions:
            return {}
        sql = " UNION ALL ".join(
            f"SELECT id, store_id, file_id, ordinal, text, heading, page FROM kb_chunks_{d} "
            "WHERE id = ANY(%(ids)s)"
            for d in sorted(self.dimensions)
        )
        rows = await self._run(lambda c: c.exec_driver_sql(sql, {"ids": list(ids)}).all())
        return {row[0]: StoredChunk(*row) for row in rows}

    async def file_chunks(self, store_id: str, file_id: str) -> list[StoredChunk]:
        if not self.dimensions:
            return []
        sql = " UNION ALL ".join(
            f"SELECT id, store_id, file_id, ordinal, text, heading, page FROM kb_chunks_{d} "
            "WHERE store_id = %(store)s AND file_id = %(file)s"
            for d in sorted(self.dimensions)
        )
        parameters = {"store": store_id, "file": file_id}
        rows = await self._run(lambda c: c.exec_driver_sql(sql, parameters).all())
        return sorted((StoredChunk(*row) for row in rows), key=lambda chunk: chunk.ordinal)

    async def count(self, store_id: str, file_id: str | None = None) -> int:
        if not self.dimensions:
            return 0
        where = "store_id = %(store)s" + (" AND file_id = %(file)s" if file_id else "")
        sql = "SELECT " + " + ".join(
            f"(SELECT count(*) FROM kb_chunks_{d} WHERE {where})" for d in sorted(self.dimensions)
        )
        parameters = {"store": store_id, "file": file_id}
        return int(await self._run(lambda c: c.exec_driver_sql(sql, parameters).scalar_one()))

    async def close(self) -> None:
        return None
