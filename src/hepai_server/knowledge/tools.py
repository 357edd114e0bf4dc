"""Tools: the platform's parts the knowledge service works with, as one small interface.

Converting a document (hepai/mineru, hepai/markitdown), embedding texts and reranking are
calls to the platform's own models and tools, made as the user they are for, through the
same permissions, routing and usage rows as any request. The gateway implements this
(gateway/knowledge_tools.py); the knowledge package only names what it needs, so its arrows
point down, and tests and the retrieval evaluation can put in-process stand-ins here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from hepai_server.db.tables import StoredFile
from hepai_server.knowledge.index import Vector
from hepai_server.services.accounts import Caller

#: Told how far a long step has come: (done, total).
Progress = Callable[[int, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Converted:
    """A document as markdown, pages marked with ``<!-- page: N -->`` where it has pages."""

    markdown: str
    pages: int | None


class ToolFailed(Exception):
    """A tool refused or failed a document; ``code`` is OpenAI's last_error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Tools(Protocol):
    async def convert(self, caller: Caller, file: StoredFile, request_id: str) -> Converted:
        """The file as markdown, by the document tool for its kind; raises ToolFailed."""

    async def embed(
        self,
        caller: Caller,
        model: str,
        texts: list[str],
        request_id: str,
        *,
        endpoint: str,
        progress: Progress | None = None,
    ) -> list[Vector]:
        """Unit vectors for the texts, by the platform's embedding ``model``: one usage row
        named ``endpoint`` for the whole call."""

    async def rerank(
        self, caller: Caller, model: str, query: str, documents: list[str], request_id: str
    ) -> list[float]:
        """A relevance score for each document, by the platform's rerank ``model``."""
