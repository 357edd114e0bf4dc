"""Token counts without a tokenizer: an estimate close to what embedding models read.

The chunk sizes of ``chunking_strategy`` are in tokens. Loading a real tokenizer in the
gateway would tie it to one model's vocabulary (the store's embedding model is a setting) and
to the ``tokenizers`` wheel; the estimate needs neither. It counts one token per CJK
character (BERT-family and bge-m3 tokenizers split Chinese into single characters or shorter
words; cl100k takes about one per character), one per punctuation mark, and a word of Latin
letters or digits as one token per four characters, at least one (the average of WordPiece
and BPE on English prose). tests/test_knowledge_chunking.py holds it within a quarter of the
packaged MiniLM tokenizer's count on English and Chinese text.
"""

from __future__ import annotations

import re

#: CJK ideographs (with extension A and the compatibility block), kana and Hangul syllables.
CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_PIECE = re.compile(rf"[{CJK}]|[^\W{CJK}_]+|[^\w\s]", re.UNICODE)


def count_tokens(text: str) -> int:
    """The estimated number of tokens in ``text``."""
    total = 0
    for match in _PIECE.finditer(text):
        length = match.end() - match.start()
        total += 1 if length <= 4 else (length + 3) // 4
    return total


def split_by_tokens(text: str, size: int, overlap: int) -> list[str]:
    """``text`` in windows of at most ``size`` estimated tokens, each starting ``size -
    overlap`` tokens after the one before; cut only between pieces, never inside a word."""
    pieces = list(_PIECE.finditer(text))
    if not pieces:
        return [text] if text.strip() else []
    costs = [1 if (m.end() - m.start()) <= 4 else (m.end() - m.start() + 3) // 4 for m in pieces]
    windows: list[str] = []
    start = 0
    while start < len(pieces):
        used, end = 0, start
        while end < len(pieces) and (used + costs[end] <= size or end == start):
            used += costs[end]
            end += 1
        first = pieces[start].start() if start else 0
        last = pieces[end].start() if end < len(pieces) else len(text)
        windows.append(text[first:last].strip())
        if end >= len(pieces):
            break
        # Step back over ``overlap`` tokens, but always move forward.
        back, step = 0, end
        while step > start + 1 and back + costs[step - 1] <= overlap:
            step -= 1
            back += costs[step]
        start = step
    return [window for window in windows if window]
