"""The file payloads of OpenAI's Files and Uploads APIs (wire spec §4), as the openai and hepai
clients parse them: FileObject, the file list page, Upload and UploadPart.

One field is ours: ``preview_url`` on a FileObject, the link a web page can show (§4.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What the wire tells of a stored file."""

    id: str
    bytes: int
    filename: str
    purpose: str
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class UploadFacts:
    """What the wire tells of a resumable upload."""

    id: str
    bytes: int
    filename: str
    purpose: str
    status: str
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class PartFacts:
    id: str
    upload_id: str
    created_at: datetime


def _epoch(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def file_object(file: FileFacts, *, preview_url: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": file.id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": _epoch(file.created_at),
        "expires_at": _epoch(file.expires_at),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": None,
    }
    if preview_url is not None:
        body["preview_url"] = preview_url
    return body


def file_list(objects: list[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": objects,
        "first_id": objects[0]["id"] if objects else None,
        "last_id": objects[-1]["id"] if objects else None,
        "has_more": has_more,
    }


def file_deleted(file_id: str) -> dict[str, Any]:
    return {"id": file_id, "object": "file", "deleted": True}


def upload_object(upload: UploadFacts, *, file: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": upload.id,
        "object": "upload",
        "bytes": upload.bytes,
        "created_at": _epoch(upload.created_at),
        "expires_at": _epoch(upload.expires_at),
        "filename": upload.filename,
        "purpose": upload.purpose,
        "status": upload.status,
        "file": file,
    }


def upload_part_object(part: PartFacts) -> dict[str, Any]:
    return {
        "id": part.id,
        "object": "upload.part",
        "created_at": _epoch(part.created_at),
        "upload_id": part.upload_id,
    }
