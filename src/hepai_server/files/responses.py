"""A stored file as an HTTP answer: the bytes (a range of them, resumed), and its public link."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from hepai_server.config import Settings
from hepai_server.db.tables import StoredFile
from hepai_server.errors import RangeNotSatisfiable
from hepai_server.files import delivery
from hepai_server.files.service import FileService


def preview_url(settings: Settings, request: Request, file_id: str) -> str:
    """The shareable link of a file: the file id is the capability."""
    base = settings.public_url or str(request.base_url)
    return f"{base.rstrip('/')}/apiv2/files/{file_id}/preview"


async def send_file(
    files: FileService, request: Request, file: StoredFile, *, cache: str
) -> Response:
    inline = delivery.is_inline(file.content_type)
    headers = {
        **delivery.SECURITY_HEADERS,
        "content-disposition": delivery.content_disposition(file.filename, inline=inline),
        "accept-ranges": "bytes",
        "cache-control": cache,
    }
    try:
        byte_range = delivery.parse_range(request.headers.get("range"), file.bytes)
    except RangeNotSatisfiable as exc:
        headers["content-range"] = f"bytes */{file.bytes}"
        return Response(
            exc.to_json(), status_code=exc.status, headers=headers, media_type="application/json"
        )
    status, start, end = 200, 0, None
    headers["content-length"] = str(file.bytes)
    if byte_range is not None:
        status, start, end = 206, byte_range.start, byte_range.end
        headers["content-length"] = str(byte_range.length)
        headers["content-range"] = byte_range.content_range
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=file.content_type)
    body = await files.open(file, start, end)
    return StreamingResponse(
        body, status_code=status, headers=headers, media_type=file.content_type
    )
