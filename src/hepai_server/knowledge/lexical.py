"""Full text for Chinese and English: the terms of a text, and BM25 over them.

Chinese has no spaces, so a full-text index that splits on them sees a sentence as one word.
Runs of Chinese characters are cut into words by jieba (its dictionary ships in its wheel), in
its search mode, which also yields the shorter words inside a long one (量子色动力学 gives
量子, 动力, 力学, 动力学…), so a query finds a document whichever way either was cut. Latin
letters and digits are lowercased words. Stop words and punctuation are left out.

Both indexes (sqlite_index.py with SQLite's FTS5, pgvector_index.py with a postings table)
index these terms and rank by BM25 with the same constants; ``Bm25`` here is the same ranking
in memory, for the retrieval evaluation and as the reference the indexes are tested against.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from hepai_server.knowledge.tokens import CJK

#: BM25's constants, as SQLite's FTS5 fixes them.
K1, B = 1.2, 0.75

_RUN = re.compile(rf"[{CJK}]+|[^\W{CJK}_]+", re.UNICODE)
_HAN = re.compile(rf"[{CJK}]")
_STOP_WORDS = """a an and are as at be but by for from has have how i if in into is it its of on or
    that the their then there these this to was were what when where which who why will with
    you your do does did can could should would we they he she them our not no so than
    的 了 和 是 在 与 及 或 也 就 都 而 并 被 把 对 从 以 之 其 中 上 下 为 这 那 个 我 你 他
    她 它 们 有 吗 呢 吧 啊 什么 怎么 如何 哪些 哪个 多少 是否"""
STOP_WORDS = frozenset(_STOP_WORDS.split())


class Segmenter:
    """Cuts text into search terms; jieba's dictionary is loaded on first use (about a second)
    and then shared by every thread of the process through this object."""

    def __init__(self) -> None:
        self._jieba: Any = None
        self._lock = threading.Lock()

    def _tokenizer(self) -> Any:
        with self._lock:
            if self._jieba is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                tokenizer = jieba.Tokenizer()
                tokenizer.initialize()
                self._jieba = tokenizer
            return self._jieba

    def terms(self, text: str) -> list[str]:
        """The text's search terms, in order, repeats kept (they are the term frequencies)."""
        out: list[str] = []
        for match in _RUN.finditer(text.lower()):
            run = match.group()
            if _HAN.match(run):
                out += [w for w in self._tokenizer().cut_for_search(run) if w not in STOP_WORDS]
            elif run not in STOP_WORDS:
                out.append(run)
        return out

    def query_terms(self, text: str) -> list[str]:
        """The distinct terms of a query, in order."""
        return list(dict.fromkeys(self.terms(text)))


def idf(documents: int, containing: int) -> float:
    """FTS5's inverse document frequency: never negative, so a term in most documents adds
    almost nothing rather than taking away."""
    return max(math.log((documents - containing + 0.5) / (containing + 0.5)), 1e-6)


def term_score(tf: int, length: int, average: float, weight: float) -> float:
    return weight * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / average))


class Bm25:
    """BM25 over a fixed list of documents' terms, in memory."""

    def __init__(self, documents: Sequence[Sequence[str]]) -> None:
        self.counts = [Counter(terms) for terms in documents]
        self.lengths = [len(terms) for terms in documents]
        self.average = (sum(self.lengths) / len(documents)) if documents else 1.0
        self.containing: Counter[str] = Counter()
        for counts in self.counts:
            self.containing.update(counts.keys())
        self.postings: dict[str, list[int]] = {}
        for index, counts in enumerate(self.counts):
            for term in counts:
                self.postings.setdefault(term, []).append(index)

    def search(self, terms: Sequence[str], limit: int) -> list[tuple[int, float]]:
        """The best ``limit`` documents for the query's terms: (index, score), best first."""
        scores: dict[int, float] = {}
        total = len(self.counts)
        for term in dict.fromkeys(terms):
            weight = idf(total, self.containing[term])
            for index in self.postings.get(term, ()):
                tf = self.counts[index][term]
                scores[index] = scores.get(index, 0.0) + term_score(
                    tf, self.lengths[index], self.average, weight
                )
        return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:limit]
