"""The payloads of OpenAI's Vector Stores API, as the openai client parses them: VectorStore,
VectorStoreFile, VectorStoreFileBatch, list pages and the search results page.

Ours, beside OpenAI's fields: a store's ``shared_with`` (who may read it besides its owner),
a file's ``progress`` (what ingestion is doing, for people), and each search result's
``page`` and ``heading`` (where in the document its chunk came from).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class FileCounts:
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.in_progress + self.completed + self.failed + self.cancelled

    def to_wire(self) -> dict[str, int]:
        return {
            "in_progress": self.in_progress,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "total": self.total,
        }


@dataclass(frozen=True, slots=True)
class StoreFacts:
    id: str
    name: str
    created_at: datetime
    last_active_at: datetime
    metadata: dict[str, str]
    usage_bytes: int
    file_counts: FileCounts
    expires_after_days: int | None
    expires_at: datetime | None
    expired: bool
    shared_groups: list[str]
    shared_users: list[str]
    embedding_model: str


@dataclass(frozen=True, slots=True)
class StoreFileFacts:
    file_id: str
    store_id: str
    created_at: datetime
    status: str
    stage: str
    last_error: dict[str, str] | None
    usage_bytes: int
    attributes: dict[str, Any]
    max_chunk_tokens: int
    chunk_overlap_tokens: int
    pages: int | None
    chunks: int


@dataclass(frozen=True, slots=True)
class SearchHit:
    file_id: str
    filename: str
    score: float
    text: str
    attributes: dict[str, Any]
    page: int | None
    heading: str
    store_id: str


def _epoch(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def store_object(store: StoreFacts) -> dict[str, Any]:
    in_progress = store.file_counts.in_progress > 0
    return {
        "id": store.id,
        "object": "vector_store",
        "created_at": _epoch(store.created_at),
        "name": store.name,
        "usage_bytes": store.usage_bytes,
        "file_counts": store.file_counts.to_wire(),
        "status": "expired" if store.expired else "in_progress" if in_progress else "completed",
        "expires_after": {"anchor": "last_active_at", "days": store.expires_after_days}
        if store.expires_after_days is not None
        else None,
        "expires_at": _epoch(store.expires_at),
        "last_active_at": _epoch(store.last_active_at),
        "metadata": store.metadata,
        # -- ours --
        "shared_with": {"groups": store.shared_groups, "users": store.shared_users},
        "embedding_model": store.embedding_model,
    }


def store_deleted(store_id: str) -> dict[str, Any]:
    return {"id": store_id, "object": "vector_store.deleted", "deleted": True}


def store_file_object(file: StoreFileFacts) -> dict[str, Any]:
    return {
        "id": file.file_id,
        "object": "vector_store.file",
        "created_at": _epoch(file.created_at),
        "usage_bytes": file.usage_bytes,
        "vector_store_id": file.store_id,
        "status": file.status,
        "last_error": file.last_error,
        "attributes": file.attributes,
        "chunking_strategy": {
            "type": "static",
            "static": {
                "max_chunk_size_tokens": file.max_chunk_tokens,
                "chunk_overlap_tokens": file.chunk_overlap_tokens,
            },
        },
        # -- ours --
        "progress": {"stage": file.stage, "pages": file.pages, "chunks": file.chunks},
    }


def file_content_page(texts: list[str]) -> dict[str, Any]:
    return {
        "object": "vector_store.file_content.page",
        "data": [{"type": "text", "text": text} for text in texts],
        "has_more": False,
        "next_page": None,
    }


def store_file_deleted(file_id: str) -> dict[str, Any]:
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


def batch_object(
    batch_id: str, store_id: str, created_at: datetime, counts: FileCounts, *, cancelled: bool
) -> dict[str, Any]:
    status = "cancelled" if cancelled else "in_progress" if counts.in_progress else "completed"
    return {
        "id": batch_id,
        "object": "vector_store.files_batch",
        "created_at": _epoch(created_at),
        "vector_store_id": store_id,
        "status": status,
        "file_counts": counts.to_wire(),
    }


def list_page(objects: list[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": objects,
        "first_id": objects[0]["id"] if objects else None,
        "last_id": objects[-1]["id"] if objects else None,
        "has_more": has_more,
    }


def search_page(query: str, hits: list[SearchHit]) -> dict[str, Any]:
    return {
        "object": "vector_store.search_results.page",
        "search_query": [query],
        "data": [
            {
                "file_id": hit.file_id,
                "filename": hit.filename,
                "score": hit.score,
                "attributes": hit.attributes,
                "content": [{"type": "text", "text": hit.text}],
                # -- ours --
                "vector_store_id": hit.store_id,
                "page": hit.page,
                "heading": hit.heading,
            }
            for hit in hits
        ],
        "has_more": False,
        "next_page": None,
    }
