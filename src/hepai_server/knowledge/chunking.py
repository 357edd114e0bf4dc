"""Chunking: markdown cut along its structure into chunks of a bounded number of tokens.

A converted document is parsed into blocks: headings, paragraphs (a list counts as one),
tables and fenced code. Blocks are packed into chunks in order; a heading always begins a new
chunk, so a chunk belongs to one section and its heading path (``Report > Results``) says
where it came from. A table or a code block is never cut while it fits in a chunk; one that
does not is cut between rows (the header row repeated) or lines. A paragraph too long for a
chunk is cut between sentences, and a sentence too long between words.

When a section runs over several chunks, each chunk after the first begins with the last
whole blocks of the one before, up to the overlap: OpenAI's ``chunk_overlap_tokens``, applied
to whole blocks, so no chunk starts mid-sentence.

Pages: the ingestion pipeline marks where each page of a PDF begins with ``<!-- page: N -->``
(markitdown marks slides with ``<!-- Slide number: N -->``); a chunk carries the page its first
block is on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hepai_server.errors import InvalidRequest
from hepai_server.knowledge.tokens import count_tokens, split_by_tokens

#: OpenAI's bounds and defaults for ``chunking_strategy``.
MIN_CHUNK_TOKENS, MAX_CHUNK_TOKENS = 100, 4096
DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS = 800, 400

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_PAGE = re.compile(r"^<!--\s*(?:page|slide number)\s*:\s*(\d+)\s*-->$", re.IGNORECASE)
_COMMENT = re.compile(r"^<!--.*-->$")
_FENCE = re.compile(r"^(```|~~~)")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
#: After a Chinese full stop, exclamation, question mark or semicolon (full width, written as
#: escapes), or at the space after an English one.
_SENTENCE = re.compile(r"(?<=[\u3002\uff01\uff1f!?\uff1b;])|(?<=[.])\s+(?=[A-Z0-9\"'(\[])|\n")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{2,}")


@dataclass(frozen=True, slots=True)
class ChunkingStrategy:
    """How large chunks are and how much consecutive chunks of a section share, in tokens."""

    max_tokens: int = DEFAULT_CHUNK_TOKENS
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS

    def to_wire(self) -> dict[str, Any]:
        """As OpenAI reports a file's strategy (``auto`` resolved to its numbers)."""
        return {
            "type": "static",
            "static": {
                "max_chunk_size_tokens": self.max_tokens,
                "chunk_overlap_tokens": self.overlap_tokens,
            },
        }


def strategy_from_request(value: Any) -> ChunkingStrategy:
    """OpenAI's ``chunking_strategy``: absent or ``{"type": "auto"}``, or ``{"type": "static",
    "static": {"max_chunk_size_tokens", "chunk_overlap_tokens"}}``."""
    param = "chunking_strategy"
    if value is None:
        return ChunkingStrategy()
    if not isinstance(value, dict) or value.get("type") not in ("auto", "static"):
        raise InvalidRequest("'chunking_strategy' must have type 'auto' or 'static'", param=param)
    if value["type"] == "auto":
        return ChunkingStrategy()
    static = value.get("static")
    if not isinstance(static, dict):
        raise InvalidRequest("a static chunking_strategy needs 'static'", param=param)
    size = static.get("max_chunk_size_tokens", DEFAULT_CHUNK_TOKENS)
    overlap = static.get("chunk_overlap_tokens", DEFAULT_OVERLAP_TOKENS)
    if type(size) is not int or not MIN_CHUNK_TOKENS <= size <= MAX_CHUNK_TOKENS:
        raise InvalidRequest(
            f"'max_chunk_size_tokens' must be an integer from {MIN_CHUNK_TOKENS} to "
            f"{MAX_CHUNK_TOKENS}",
            param=param,
        )
    if type(overlap) is not int or not 0 <= overlap <= size // 2:
        raise InvalidRequest(
            "'chunk_overlap_tokens' must be an integer from 0 to half of max_chunk_size_tokens",
            param=param,
        )
    return ChunkingStrategy(size, overlap)


@dataclass(frozen=True, slots=True)
class Block:
    """One structural unit of a document."""

    kind: str  # heading, paragraph, table, code
    text: str
    tokens: int
    headings: tuple[str, ...]
    page: int | None


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document as it is indexed and returned by search."""

    text: str
    tokens: int
    #: The headings above the chunk, outermost first.
    headings: tuple[str, ...]
    #: The page (1-based) its first block is on, where the document has pages.
    page: int | None

    @property
    def heading(self) -> str:
        return " > ".join(self.headings)

    def indexed_text(self) -> str:
        """What search reads: the heading path, then the text (the headings give a chunk of a
        section the words its section is known by)."""
        return f"{self.heading}\n{self.text}" if self.headings else self.text


def parse_blocks(markdown: str) -> list[Block]:
    """The document's blocks in order, each with its heading path and page."""
    blocks: list[Block] = []
    headings: list[tuple[int, str]] = []
    page: int | None = None
    lines: list[str] = []
    kind = "paragraph"

    def flush() -> None:
        nonlocal lines
        text = "\n".join(lines).strip()
        if text:
            path = tuple(title for _, title in headings)
            blocks.append(Block(kind, text, count_tokens(text), path, page))
        lines = []

    fence: str | None = None
    for raw in markdown.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if fence is not None:
            lines.append(line)
            if stripped.startswith(fence):
                flush()
                fence = None
            continue
        if match := _FENCE.match(stripped):
            flush()
            kind, fence = "code", match.group(1)
            lines.append(line)
            continue
        if match := _PAGE.match(stripped):
            flush()
            page = int(match.group(1))
            continue
        if _COMMENT.match(stripped):
            continue
        if match := _HEADING.match(stripped):
            flush()
            level, title = len(match.group(1)), _IMAGE.sub(r"\1", match.group(2)).strip()
            headings = [(lv, t) for lv, t in headings if lv < level] + [(level, title)]
            kind, lines = "heading", [stripped]
            flush()
            kind = "paragraph"
            continue
        is_row = stripped.startswith("|")
        if not stripped or (is_row != (kind == "table") and lines):
            flush()
        if stripped:
            kind = "table" if is_row else "paragraph"
            lines.append(_IMAGE.sub(r"\1", line))
    flush()
    return blocks


def _pieces(block: Block, strategy: ChunkingStrategy, *, room: int) -> Iterator[Block]:
    """The block, or its parts when it is larger than ``room`` tokens."""
    size = max(room, strategy.max_tokens // 2)
    if block.tokens <= size:
        yield block
        return
    if block.kind == "table":
        rows = block.text.split("\n")
        header = rows[:2] if len(rows) > 1 and _TABLE_RULE.match(rows[1]) else rows[:1]
        units, prefix = rows[len(header) :], "\n".join(header) + "\n"
    elif block.kind == "code":
        units, prefix = block.text.split("\n"), ""
    else:
        units, prefix = [s for s in _SENTENCE.split(block.text) if s and s.strip()], ""
    budget = size - count_tokens(prefix)
    current: list[str] = []
    used = 0
    for unit in units:
        cost = count_tokens(unit)
        if cost > budget:  # one sentence (or row) larger than a chunk: cut between words
            if current:
                yield _part(block, prefix + _join(block, current))
                current, used = [], 0
            for window in split_by_tokens(unit, budget, strategy.overlap_tokens):
                yield _part(block, prefix + window)
            continue
        if used + cost > budget and current:
            yield _part(block, prefix + _join(block, current))
            current = _carried(current, strategy.overlap_tokens, budget - cost, block.kind)
            used = sum(count_tokens(u) for u in current)
        current.append(unit)
        used += cost
    if current:
        yield _part(block, prefix + _join(block, current))


def _carried(units: list[str], overlap: int, room: int, kind: str) -> list[str]:
    """The last sentences of a part that the next part of a long paragraph repeats (rows of
    tables and lines of code are not repeated)."""
    if kind in ("table", "code"):
        return []
    kept: list[str] = []
    used = 0
    for unit in reversed(units[1:]):
        cost = count_tokens(unit)
        if used + cost > min(overlap, room):
            break
        kept.insert(0, unit)
        used += cost
    return kept


def _join(block: Block, units: list[str]) -> str:
    if block.kind in ("table", "code"):
        return "\n".join(units)
    # Sentences were split at the spaces between them (English) or after their full stop
    # (Chinese, no space): put a space back only after the former.
    return "".join(unit + " " if unit[-1].isascii() else unit for unit in units).strip()


def _part(block: Block, text: str) -> Block:
    return Block(block.kind, text, count_tokens(text), block.headings, block.page)


def chunk_markdown(markdown: str, strategy: ChunkingStrategy | None = None) -> list[Chunk]:
    """The document's chunks, in reading order."""
    strategy = strategy or ChunkingStrategy()
    chunks: list[Chunk] = []
    current: list[Block] = []

    def emit(blocks: list[Block]) -> None:
        text = "\n\n".join(b.text for b in blocks)
        last = blocks[-1] if blocks[-1].kind == "heading" else blocks[0]
        chunks.append(Chunk(text, count_tokens(text), last.headings, blocks[0].page))

    for block in parse_blocks(markdown):
        if block.kind == "heading":
            # A heading with nothing under it before the next is kept only in the paths.
            if not _only_headings(current):
                emit(current)
            current = [block]
            continue
        # Under a heading alone, the first part of a long block leaves room for the heading.
        titles = sum(b.tokens + 2 for b in current) if _only_headings(current) else 0
        for piece in _pieces(block, strategy, room=strategy.max_tokens - titles):
            used = sum(b.tokens for b in current) + 2 * max(len(current) - 1, 0)
            if current and used + piece.tokens > strategy.max_tokens:
                emit(current)
                current = _overlap(current, strategy, room=strategy.max_tokens - piece.tokens)
            current.append(piece)
    if current:
        emit(current)
    return chunks


def _only_headings(blocks: list[Block]) -> bool:
    return all(block.kind == "heading" for block in blocks)


def _overlap(blocks: list[Block], strategy: ChunkingStrategy, *, room: int) -> list[Block]:
    """The last whole blocks of a full chunk that the next one repeats: at most the overlap,
    leaving room for the block that follows, and never the whole chunk again."""
    limit = min(strategy.overlap_tokens, room)
    kept: list[Block] = []
    used = 0
    for block in reversed(blocks[1:]):
        if block.kind == "heading" or used + block.tokens > limit:
            break
        kept.insert(0, block)
        used += block.tokens
    return kept
