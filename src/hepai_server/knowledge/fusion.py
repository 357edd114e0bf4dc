"""Reciprocal rank fusion: one ranking from several, by rank alone.

Dense similarities and BM25 scores are on scales that cannot be added; their ranks can. A
chunk's fused score is the sum of 1/(k + rank) over the rankings it appears in (Cormack,
Clarke and Büttcher, 2009, with their k = 60), divided by what first place in every ranking
would get, so it runs from 0 to 1 and a score threshold means the same for any query.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = 60
T = TypeVar("T", bound=Hashable)


def fuse(rankings: Sequence[Sequence[T]], k: int = K) -> list[tuple[T, float]]:
    """The items of every ranking (best first each) in fused order, with their scores."""
    scores: dict[T, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    best = len([r for r in rankings if r]) / (k + 1) or 1.0
    ordered = sorted(scores.items(), key=lambda pair: -pair[1])
    return [(item, score / best) for item, score in ordered]
