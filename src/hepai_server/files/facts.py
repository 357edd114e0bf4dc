"""The file service's rows as the plain values the wire formats take."""

from __future__ import annotations

from hepai_server.db.tables import StoredFile, Upload, UploadPart
from hepai_server.protocol.files import FileFacts, PartFacts, UploadFacts


def file_facts(file: StoredFile) -> FileFacts:
    return FileFacts(
        id=file.id,
        bytes=file.bytes,
        filename=file.filename,
        purpose=file.purpose,
        created_at=file.created_at,
        expires_at=file.expires_at,
    )


def upload_facts(upload: Upload) -> UploadFacts:
    return UploadFacts(
        id=upload.id,
        bytes=upload.bytes,
        filename=upload.filename,
        purpose=upload.purpose,
        status=upload.status,
        created_at=upload.created_at,
        expires_at=upload.expires_at,
    )


def part_facts(part: UploadPart) -> PartFacts:
    return PartFacts(id=part.id, upload_id=part.upload_id, created_at=part.created_at)
