"""Retrieval quality of the knowledge service on a labelled set: recall@5 and MRR@10 of dense
vectors only, BM25 only, hybrid (reciprocal rank fusion) and hybrid + rerank.

The documents are real and openly licensed: NumPy's own reference documentation (BSD-3), the
docstrings of the numpy package installed from PyPI, of numpy, numpy.linalg, numpy.fft and
numpy.random.Generator. Each function's documentation is one document (markdown: its
signature, parameters, returns, notes and examples), chunked as ingestion chunks. Its one-line
summary is taken *out* of the document and asked as the question; the answer is any chunk of
that function's document. Functions whose summaries are identical (aliases) are kept once.
The Chinese questions (data/numpy_questions_zh.tsv) are hand-made translations of some of
those summaries, asked of the same English documents.

The pipeline is the service's own: chunking.py, the embedded SqliteIndex, lexical.py's terms,
retrieval.retrieve. Vectors are the packaged all-MiniLM-L6-v2 the embeddings worker serves,
computed in this process; the rerank is what the rerank worker serves offline (MiniLM cosine),
since no cross-encoder ships in a package.

    .venv/bin/python benchmarks/knowledge_quality.py
"""

from __future__ import annotations

import asyncio
import inspect
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hepai_server.knowledge.chunking import ChunkingStrategy, chunk_markdown
from hepai_server.knowledge.index import IndexedChunk
from hepai_server.knowledge.lexical import Segmenter
from hepai_server.knowledge.retrieval import Query, retrieve
from hepai_server.knowledge.sqlite_index import SqliteIndex
from hepai_server.worker.builtin.encoder import TextEncoder, packaged_minilm

HERE = Path(__file__).parent
STRATEGY = ChunkingStrategy(max_tokens=400, overlap_tokens=100)
SECTION = re.compile(r"^(\w[\w ]*)\n-{3,}$", re.MULTILINE)


@dataclass(frozen=True)
class Document:
    name: str
    summary: str
    markdown: str


def documentation() -> list[Document]:
    """Every documented numpy function, once per distinct summary."""
    sources: list[tuple[str, Any]] = []
    for prefix, module in (("", np), ("linalg.", np.linalg), ("fft.", np.fft)):
        sources += [(prefix + name, getattr(module, name)) for name in sorted(dir(module))]
    generator = np.random.Generator
    sources += [(f"random.Generator.{n}", getattr(generator, n)) for n in sorted(dir(generator))]
    found: dict[str, Document] = {}
    for name, item in sources:
        if name.rsplit(".", 1)[-1].startswith("_") or not callable(item):
            continue
        if inspect.isclass(item) and not isinstance(item, np.ufunc):
            continue
        doc = inspect.getdoc(item)
        if not doc or "Parameters" not in doc:
            continue
        paragraphs = doc.split("\n\n")
        signature = ""
        if paragraphs[0].rstrip().endswith(")") and "(" in paragraphs[0].split("\n")[0]:
            signature, paragraphs = paragraphs[0], paragraphs[1:]
        summary = " ".join(paragraphs[0].split())
        if len(summary.split()) < 4 or summary in found:
            continue
        body = SECTION.sub(r"## \1", "\n\n".join(paragraphs[1:]))
        markdown = f"# numpy.{name}\n\n{signature}\n\n{body}"
        found[summary] = Document(name, summary, markdown)
    return list(found.values())


async def encode_cached(encoder: TextEncoder, texts: list[str]) -> Any:
    """MiniLM vectors of ``texts``, kept in benchmarks/.cache between runs (encoding the
    corpus takes minutes on two shared cores)."""
    import hashlib

    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    cache = HERE / ".cache" / f"minilm-{digest}.npy"
    if cache.exists():
        return np.load(cache)
    vectors, _ = await encoder.encode(texts)
    cache.parent.mkdir(exist_ok=True)
    np.save(cache, vectors)
    return vectors


def questions(documents: list[Document]) -> list[tuple[str, str, str]]:
    """(language, question, answering document) for every question."""
    names = {doc.name for doc in documents}
    english = [("en", doc.summary, doc.name) for doc in documents]
    chinese = []
    for line in (HERE / "data" / "numpy_questions_zh.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            name, question = line.split("\t")
            if name in names:
                chinese.append(("zh", question, name))
            else:
                print(f"no document for {name}; its question is left out", file=sys.stderr)
    return english + chinese


async def evaluate() -> dict[str, dict[str, float]]:
    documents = documentation()
    asked = questions(documents)
    encoder = TextEncoder(packaged_minilm(), batch_size=64)
    segmenter = Segmenter()
    started = time.perf_counter()
    chunked = [(doc, chunk_markdown(doc.markdown, STRATEGY)) for doc in documents]
    texts = [chunk.indexed_text() for _, chunks in chunked for chunk in chunks]
    vectors = await encode_cached(encoder, texts)
    with tempfile.TemporaryDirectory() as scratch:
        index = SqliteIndex(Path(scratch) / "knowledge.db")
        await index.prepare()
        at = 0
        for doc, chunks in chunked:
            rows = []
            for ordinal, chunk in enumerate(chunks):
                text = chunk.indexed_text()
                rows.append(
                    IndexedChunk(
                        ordinal,
                        chunk.text,
                        chunk.heading,
                        chunk.page,
                        chunk.tokens,
                        segmenter.terms(text),
                        vectors[at],
                    )
                )
                at += 1
            await index.replace_file("vs_numpy", doc.name, rows)
        print(
            f"{len(documents)} documents, {len(texts)} chunks, {len(asked)} questions "
            f"({sum(1 for q in asked if q[0] == 'zh')} in Chinese), "
            f"indexed in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        query_vectors = await encode_cached(encoder, [question for _, question, _ in asked])

        async def rerank(query: str, candidates: list[str]) -> list[float]:
            encoded, _ = await encoder.encode([query, *candidates])
            return [float(x) for x in encoded[1:] @ encoded[0]]

        results: dict[str, dict[str, float]] = {}
        for mode in ("dense", "lexical", "hybrid", "hybrid+rerank"):
            print(f"{mode}...", file=sys.stderr, flush=True)
            ranks: dict[str, list[int | None]] = {"en": [], "zh": []}
            for (language, question, answer), vector in zip(asked, query_vectors, strict=True):
                ranked = await retrieve(
                    index,
                    segmenter,
                    Query(
                        text=question,
                        vectors=[(["vs_numpy"], vector)],
                        limit=10,
                        # The rerank reads the best 20 fused chunks (the service: 50), so
                        # this run takes minutes rather than an hour on two shared cores.
                        candidates=20 if mode == "hybrid+rerank" else 50,
                        mode="hybrid" if mode == "hybrid+rerank" else mode,  # type: ignore[arg-type]
                    ),
                    rerank if mode == "hybrid+rerank" else None,
                )
                files = [r.chunk.file_id for r in ranked]
                ranks[language].append(files.index(answer) + 1 if answer in files else None)
            for language in ("en", "zh", "all"):
                found = ranks["en"] + ranks["zh"] if language == "all" else ranks[language]
                results[f"{mode}/{language}"] = {
                    "recall@5": sum(1 for r in found if r is not None and r <= 5) / len(found),
                    "mrr@10": sum(1 / r for r in found if r is not None) / len(found),
                    "questions": len(found),
                }
        await index.close()
    return results


def main() -> None:
    results = asyncio.run(evaluate())
    print("| Retrieval | Questions | Recall@5 | MRR@10 |")
    print("|---|---|---|---|")
    for key, row in results.items():
        print(f"| {key} | {row['questions']} | {row['recall@5']:.3f} | {row['mrr@10']:.3f} |")


if __name__ == "__main__":
    main()
