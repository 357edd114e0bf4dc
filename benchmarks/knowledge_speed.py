"""Knowledge bases on the CPU: ingestion throughput, and search latency at 100k chunks.

Ingestion: a generated 24-page two-column paper converted by hepai/mineru's CPU engine
(docvortex, in an isolated child exactly as the worker runs it), then chunked, embedded by
the packaged all-MiniLM-L6-v2 and indexed (the embedded SQLite index): pages/s and chunks/s.
Measured in this process rather than through a served platform, so the numbers are the
pipeline's, not the HTTP hops' (each a millisecond or so).

Search: 100,000 chunks in one store, on the embedded SQLite index and on pgvector (a pgserver
PostgreSQL with pgvector 0.6, HNSW). Texts are NumPy's documentation chunks repeated with a
distinguishing token; vectors are their real MiniLM embeddings, each copy moved by a small
random step (so no two are equal). 200 queries (the functions' summaries) go through the
service's own retrieve(): hybrid without rerank, and hybrid with the MiniLM cosine rerank of
the top 50 candidates (what the rerank worker serves offline). p50 and p95 in milliseconds.

    .venv/bin/python benchmarks/knowledge_speed.py [--chunks 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from hepai_server.knowledge.chunking import ChunkingStrategy, chunk_markdown
from hepai_server.knowledge.index import ChunkIndex, IndexedChunk, as_vector
from hepai_server.knowledge.lexical import Segmenter
from hepai_server.knowledge.pgvector_index import PgvectorIndex
from hepai_server.knowledge.retrieval import Query, retrieve
from hepai_server.knowledge.sqlite_index import SqliteIndex
from hepai_server.worker.builtin.encoder import TextEncoder, packaged_minilm
from knowledge_quality import documentation, encode_cached

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pgvector_server import pgvector_postgres  # noqa: E402

PAGES = 24
STRATEGY = ChunkingStrategy(max_tokens=400, overlap_tokens=100)


def paper(pages: int) -> bytes:
    """A two-column paper of ``pages`` pages, real sentences from NumPy's documentation."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate, Paragraph

    sheet = getSampleStyleSheet()
    width, height = A4
    column = (width - 120) / 2
    frames = [Frame(50, 50, column, height - 100), Frame(70 + column, 50, column, height - 100)]
    out = io.BytesIO()
    doc = BaseDocTemplate(out, pagesize=A4, pageTemplates=[PageTemplate("two", frames)])
    story: list[Any] = []
    for item in documentation():
        story.append(Paragraph(f"numpy.{item.name}", sheet["Heading2"]))
        text = item.summary + " " + " ".join(item.markdown.split()[:120])
        story.append(Paragraph(text.replace("<", "&lt;").replace(">", "&gt;"), sheet["BodyText"]))
        if len(story) > pages * 14:
            break
    doc.build(story)
    return out.getvalue()


async def ingestion(encoder: TextEncoder, segmenter: Segmenter) -> dict[str, float]:
    from hepai_server.worker.builtin.isolation import run_isolated
    from hepai_server.worker.builtin.layout import convert_document, warm_up

    warm_up()
    data = paper(PAGES)
    pages: dict[int, str] = {}

    def arrived(item: tuple[Any, ...]) -> None:
        if item[0] == "page":
            pages[item[1]] = item[2][0]

    started = time.perf_counter()
    run_isolated(convert_document, data, timeout=600, memory_bytes=4 << 30, on_item=arrived)
    converted = time.perf_counter()
    markdown = "\n\n".join(f"<!-- page: {i + 1} -->\n\n{pages[i]}" for i in sorted(pages))
    chunks = chunk_markdown(markdown, STRATEGY)
    texts = [chunk.indexed_text() for chunk in chunks]
    vectors, _ = await encoder.encode(texts)
    with tempfile.TemporaryDirectory() as scratch:
        index = SqliteIndex(Path(scratch) / "knowledge.db")
        await index.prepare()
        rows = [
            IndexedChunk(i, c.text, c.heading, c.page, c.tokens, segmenter.terms(t), vectors[i])
            for i, (c, t) in enumerate(zip(chunks, texts, strict=True))
        ]
        await index.replace_file("vs_speed", "file-paper", rows)
    done = time.perf_counter()
    return {
        "pages": len(pages),
        "chunks": len(chunks),
        "convert_pages_per_s": len(pages) / (converted - started),
        "index_chunks_per_s": len(chunks) / (done - converted),
        "end_to_end_pages_per_s": len(pages) / (done - started),
        "end_to_end_chunks_per_s": len(chunks) / (done - started),
    }


async def fill(index: ChunkIndex, total: int, base: list[tuple[str, list[str], Any]]) -> float:
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    per_file = 500
    for start in range(0, total, per_file):
        rows = []
        for n in range(start, min(start + per_file, total)):
            text, terms, vector = base[n % len(base)]
            moved = as_vector(vector + rng.normal(scale=0.02, size=vector.shape).astype(np.float32))
            rows.append(
                IndexedChunk(n, f"{text} copy{n}", "", None, 100, [*terms, f"copy{n}"], moved)
            )
        await index.replace_file("vs_big", f"file-{start // per_file}", rows)
    return time.perf_counter() - started


async def latency(
    index: ChunkIndex,
    segmenter: Segmenter,
    queries: list[tuple[str, Any]],
    rerank: Any,
) -> tuple[float, float]:
    timings = []
    for text, vector in queries:
        started = time.perf_counter()
        await retrieve(
            index,
            segmenter,
            Query(text=text, vectors=[(["vs_big"], vector)], limit=10, candidates=50),
            rerank,
        )
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return statistics.median(timings), timings[int(len(timings) * 0.95) - 1]


async def search(encoder: TextEncoder, segmenter: Segmenter, total: int) -> dict[str, Any]:
    documents = documentation()
    chunks = [c for d in documents for c in chunk_markdown(d.markdown, STRATEGY)]
    texts = [c.indexed_text() for c in chunks]
    vectors = await encode_cached(encoder, texts)
    base = [(c.text, segmenter.terms(t), v) for c, t, v in zip(chunks, texts, vectors, strict=True)]
    asked = [d.summary for d in documents[:200]]
    query_vectors = await encode_cached(encoder, asked)
    queries = list(zip(asked, query_vectors, strict=True))

    async def rerank(query: str, candidates: list[str]) -> list[float]:
        encoded, _ = await encoder.encode([query, *candidates])
        return [float(x) for x in encoded[1:] @ encoded[0]]

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        sqlite = SqliteIndex(Path(scratch) / "knowledge.db")
        await sqlite.prepare()
        results["sqlite_fill_s"] = await fill(sqlite, total, base)
        print("sqlite filled", results, file=sys.stderr, flush=True)
        await latency(sqlite, segmenter, queries[:5], None)  # loads the matrix once
        results["sqlite"] = await latency(sqlite, segmenter, queries, None)
        # The rerank's time is the model's, the same for either index: 50 queries tell it.
        results["sqlite_rerank"] = await latency(sqlite, segmenter, queries[:50], rerank)
    with pgvector_postgres() as url:
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        pgvector = PgvectorIndex(engine)
        await pgvector.prepare()
        print("sqlite searched", results, file=sys.stderr, flush=True)
        results["pgvector_fill_s"] = await fill(pgvector, total, base)
        print("pgvector filled", results, file=sys.stderr, flush=True)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
        await latency(pgvector, segmenter, queries[:5], None)
        results["pgvector"] = await latency(pgvector, segmenter, queries, None)
        results["pgvector_rerank"] = await latency(pgvector, segmenter, queries[:50], rerank)
        engine.dispose()
    return results


async def main(total: int, skip_ingestion: bool) -> None:
    encoder = TextEncoder(packaged_minilm(), batch_size=64)
    segmenter = Segmenter()
    if not skip_ingestion:
        print("ingestion:", await ingestion(encoder, segmenter), flush=True)
    print("search:", await search(encoder, segmenter, total), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--skip-ingestion", action="store_true")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.chunks, arguments.skip_ingestion))
