"""The chunk index on both engines, the embedded SQLite file and pgvector in PostgreSQL: the
same chunks in, the same answers out."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from hepai_server.knowledge.fusion import fuse
from hepai_server.knowledge.index import ChunkIndex, IndexedChunk, as_vector
from hepai_server.knowledge.lexical import Bm25, Segmenter
from hepai_server.knowledge.pgvector_index import PgvectorIndex
from hepai_server.knowledge.retrieval import Query, retrieve
from hepai_server.knowledge.sqlite_index import SqliteIndex
from tests.pgvector_server import pgvector_postgres

DIMENSION = 8
TEXTS = [
    "The muon lifetime was measured with a plastic scintillator.",
    "渐近自由是量子色动力学的重要性质。",
    "The calorimeter was calibrated with cosmic muons and cosmic rays.",
    "夸克禁闭意味着夸克不能单独存在。",
    "Beam conditions were stable during the whole run.",
    "探测器的刻度使用了宇宙线缪子。",
]
SEGMENTER = Segmenter()


@pytest.fixture(scope="module")
def pgvector_url() -> Iterator[str]:
    with pgvector_postgres() as url:
        yield url.replace("postgresql://", "postgresql+psycopg://", 1)


#: The pgvector variant runs a private PostgreSQL: the postgres tier.
@pytest.fixture(params=["sqlite", pytest.param("pgvector", marks=pytest.mark.postgres)])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChunkIndex]:
    engine: sa.Engine | None = None
    built: Any
    if request.param == "sqlite":
        built = SqliteIndex(tmp_path / "knowledge.db")
    else:
        engine = sa.create_engine(request.getfixturevalue("pgvector_url"))
        built = PgvectorIndex(engine)
    asyncio.run(built.prepare())
    asyncio.run(built.prepare())  # twice: preparing is idempotent
    yield built
    asyncio.run(built.close())
    if engine is not None:
        with engine.begin() as connection:
            for dimension in built.dimensions:
                connection.exec_driver_sql(
                    f"DROP TABLE kb_terms_{dimension}, kb_chunks_{dimension}"
                )
        engine.dispose()


def vector_of(seed: int) -> np.ndarray:
    return as_vector(np.random.default_rng(seed).normal(size=DIMENSION))


def chunks_of(texts: list[str], seed: int = 0) -> list[IndexedChunk]:
    return [
        IndexedChunk(
            ordinal=i,
            text=text,
            heading="Report > Section",
            page=i + 1,
            tokens=len(text),
            terms=SEGMENTER.terms(text),
            vector=vector_of(seed + i),
        )
        for i, text in enumerate(texts)
    ]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def texts(index: ChunkIndex, ids: list[int]) -> list[str]:
    found = run(index.chunks(ids))
    return [found[i].text for i in ids]


def test_nearest_finds_the_closest_vectors_of_the_store_only(index: ChunkIndex) -> None:
    run(index.replace_file("vs_a", "file-1", chunks_of(TEXTS)))
    run(index.replace_file("vs_b", "file-2", chunks_of(TEXTS, seed=100)))
    query = as_vector(vector_of(3) + 0.05 * vector_of(99))
    ids = run(index.nearest(["vs_a"], query, 3))
    assert texts(index, ids)[0] == TEXTS[3]
    assert {c.store_id for c in run(index.chunks(ids)).values()} == {"vs_a"}
    everywhere = run(index.nearest(["vs_a", "vs_b"], query, 20))
    assert len(everywhere) == 2 * len(TEXTS)


def test_matching_ranks_chinese_and_english_terms_as_bm25_does(index: ChunkIndex) -> None:
    run(index.replace_file("vs_a", "file-1", chunks_of(TEXTS)))
    reference = Bm25([SEGMENTER.terms(text) for text in TEXTS])
    for query in ("cosmic muons calibration", "夸克 量子色动力学", "宇宙线缪子刻度"):
        terms = SEGMENTER.query_terms(query)
        expected = [TEXTS[i] for i, _ in reference.search(terms, 10)]
        assert expected, query
        assert texts(index, run(index.matching(["vs_a"], terms, 10))) == expected, query


def test_replacing_a_file_twice_leaves_one_copy(index: ChunkIndex) -> None:
    run(index.replace_file("vs_a", "file-1", chunks_of(TEXTS)))
    run(index.replace_file("vs_a", "file-1", chunks_of(TEXTS)))
    assert [c.text for c in run(index.file_chunks("vs_a", "file-1"))] == TEXTS
    assert run(index.count("vs_a")) == len(TEXTS)
    assert run(index.count("vs_a", "file-1")) == len(TEXTS)


def test_removing_a_file_removes_its_chunks_from_both_searches(index: ChunkIndex) -> None:
    run(index.replace_file("vs_a", "file-1", chunks_of(TEXTS[:3])))
    run(index.replace_file("vs_a", "file-2", chunks_of(TEXTS[3:], seed=3)))
    terms = SEGMENTER.query_terms("muon 夸克")
    assert len(run(index.matching(["vs_a"], terms, 10))) == 2
    run(index.remove_file("vs_a", "file-1"))
    assert run(index.count("vs_a")) == 3
    assert texts(index, run(index.matching(["vs_a"], terms, 10))) == [TEXTS[3]]
    nearest = run(index.nearest(["vs_a"], vector_of(0), 10))
    assert {c.file_id for c in run(index.chunks(nearest)).values()} == {"file-2"}
    run(index.remove_store("vs_a"))
    assert run(index.count("vs_a")) == 0
    assert run(index.nearest(["vs_a"], vector_of(0), 10)) == []


def test_a_file_filter_limits_both_searches(index: ChunkIndex) -> None:
    run(index.replace_file("vs_a", "file-1", chunks_of(TEXTS[:3])))
    run(index.replace_file("vs_a", "file-2", chunks_of(TEXTS[3:], seed=3)))
    only = {"file-2"}
    nearest = run(index.nearest(["vs_a"], vector_of(0), 10, file_ids=only))
    assert len(nearest) == 3
    assert {c.file_id for c in run(index.chunks(nearest)).values()} == only
    matched = run(index.matching(["vs_a"], SEGMENTER.query_terms("muon 夸克"), 10, file_ids=only))
    assert texts(index, matched) == [TEXTS[3]]
    assert run(index.nearest(["vs_a"], vector_of(0), 10, file_ids=set())) == []


def test_a_small_store_among_large_ones_gets_all_its_neighbours(index: ChunkIndex) -> None:
    big = [f"filler chunk number {i}" for i in range(600)]
    run(index.replace_file("vs_big", "file-big", chunks_of(big, seed=1000)))
    run(index.replace_file("vs_small", "file-small", chunks_of(TEXTS[:4])))
    assert len(run(index.nearest(["vs_small"], vector_of(5000), 4))) == 4


def test_fusion_prefers_what_both_rankings_agree_on() -> None:
    fused = fuse([["a", "b", "c"], ["c", "a", "d"]])
    assert [item for item, _ in fused] == ["a", "c", "b", "d"]
    assert fused[0][1] < 1.0 and fuse([["x"], ["x"]])[0][1] == pytest.approx(1.0)
    assert fuse([[], ["only"]])[0] == ("only", pytest.approx(1.0))


def test_a_query_of_a_million_distinct_characters_is_searched_by_its_head(
    index: ChunkIndex,
) -> None:
    """Full-text terms come from the query's head only: a megabyte of query neither stalls the
    event loop in the segmenter nor passes the database's limit on bound terms."""
    run(index.replace_file("vs_a", "file-1", chunks_of(TEXTS)))
    noise = "".join(chr(0x4E00 + i % 20000) + str(i) for i in range(300_000))
    query = Query(text=TEXTS[3] + " " + noise, vectors=[(["vs_a"], vector_of(3))], limit=3)
    found = run(retrieve(index, SEGMENTER, query))
    assert found and found[0].chunk.text == TEXTS[3]
