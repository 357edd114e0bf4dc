"""Document: an uploaded file, checked before any converter sees it.

Converters trust their input: python-docx reads every zip member whole (a 1 MB zip bomb named
.docx took 2 GB and minutes), pdfminer parses whatever it is given. So the bytes are checked
first, in milliseconds: not empty, not too large, the format the suffix claims (by its magic
bytes), zips within sane uncompressed sizes and ratios, PDFs that open without a password and
have a bounded number of pages.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import zipfile
from dataclasses import dataclass
from typing import Any

from hepai_server.config import Settings
from hepai_server.worker.model import TooLarge, current_call

#: Office formats are zips that must hold this part.
ZIP_FORMATS = {
    "docx": "word/document.xml",
    "pptx": "ppt/presentation.xml",
    "xlsx": "xl/workbook.xml",
}
OLE_FORMATS = {"xls", "msg", "doc", "ppt"}
IMAGE_FORMATS = {"png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp"}
TEXT_FORMATS = {"html", "htm", "txt", "md", "csv", "json", "xml"}
SUPPORTED = {"pdf", *ZIP_FORMATS, *OLE_FORMATS, *IMAGE_FORMATS, *TEXT_FORMATS}

ZIP_MAX_MEMBERS = 5_000
ZIP_MAX_UNCOMPRESSED = 200 * 1024 * 1024
ZIP_MAX_RATIO = 100


class BadDocument(ValueError):
    """The file cannot be converted as given (400)."""


class DocumentTooLarge(TooLarge):
    """The file is over a size or page limit (413)."""


@dataclass(frozen=True, slots=True)
class Document:
    data: bytes
    name: str
    #: The format, lower case without the dot: pdf, docx, png…
    suffix: str


def suffix_of(name: str | None, suffix: str | None) -> str:
    given = (suffix or "").strip().lower().lstrip(".")
    if not given and name and "." in name:
        given = name.rsplit(".", 1)[1].lower()
    return given


def check_document(
    data: bytes, *, name: str | None, suffix: str | None, max_bytes: int, max_pages: int
) -> Document:
    kind = suffix_of(name, suffix)
    shown = name or f"the .{kind or '?'} file"
    if not data:
        raise BadDocument(f"{shown} is empty")
    if len(data) > max_bytes:
        raise DocumentTooLarge(f"{shown} has {len(data)} bytes; the limit is {max_bytes}")
    if not kind:
        raise BadDocument("give the file's name or suffix (pdf, docx, png, ...)")
    if kind not in SUPPORTED:
        raise BadDocument(
            f"cannot convert .{kind} files; supported: {', '.join(sorted(SUPPORTED))}"
        )
    actual = sniff(data)
    expected = "jpg" if kind == "jpeg" else "tif" if kind == "tiff" else kind
    family = {**dict.fromkeys(ZIP_FORMATS, "zip"), **dict.fromkeys(OLE_FORMATS, "ole")}
    if actual is not None and actual not in (expected, family.get(expected)):
        raise BadDocument(f"{shown} is named .{kind} but its content is {actual.upper()}")
    if kind in ZIP_FORMATS:
        check_zip(data, shown, required=ZIP_FORMATS[kind])
    if kind == "pdf":
        check_pdf(data, shown, max_pages=max_pages)
    if kind in IMAGE_FORMATS and actual is None:
        raise BadDocument(f"{shown} is not a {kind.upper()} image")
    return Document(data=data, name=name or f"document.{kind}", suffix=kind)


def sniff(data: bytes) -> str | None:
    """The container a file's first bytes show, or None for text and unknown formats."""
    head = data[:16]
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "ole"
    if head.startswith(b"\x89PNG"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    return None


def check_zip(data: bytes, shown: str, *, required: str) -> None:
    """Refuse zip bombs before any reader opens a member. zipfile never returns more than a
    member's declared size, so the declared sizes bound what reading can cost."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile:
        raise BadDocument(f"{shown} is damaged (not a readable zip container)") from None
    if len(members) > ZIP_MAX_MEMBERS:
        raise BadDocument(f"{shown} holds {len(members)} parts; at most {ZIP_MAX_MEMBERS}")
    unpacked = sum(member.file_size for member in members)
    if unpacked > ZIP_MAX_UNCOMPRESSED or (
        unpacked > 10 * 1024 * 1024 and unpacked > ZIP_MAX_RATIO * len(data)
    ):
        raise BadDocument(
            f"{shown} would unpack to {unpacked} bytes from {len(data)}: refused as a zip bomb"
        )
    if required not in {member.filename for member in members}:
        raise BadDocument(f"{shown} is a zip but not a valid document (no {required})")


def check_pdf(data: bytes, shown: str, *, max_pages: int) -> None:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise BadDocument(f"{shown} is password-protected; send it unlocked") from None
        raise BadDocument(f"{shown} is damaged: {exc}") from None
    try:
        if len(pdf) > max_pages:
            raise DocumentTooLarge(f"{shown} has {len(pdf)} pages; the limit is {max_pages}")
        if len(pdf) == 0:
            raise BadDocument(f"{shown} has no pages")
    finally:
        pdf.close()


def decode_base64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise BadDocument(f"'{name}' must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadDocument(f"'{name}' is not valid base64") from None


async def document_from_call(kwargs: dict[str, Any], settings: Settings) -> Document:
    """The document a tool call sends, in any of the public call shapes, checked.

    ``file_id`` (a platform file, read as the caller), ``file_base64`` with ``file_name`` or
    ``suffix``, the older ``pdf_base64``, or the hepai client's multipart ``file`` upload.
    """
    name = kwargs.get("file_name") or kwargs.get("filename")
    suffix = kwargs.get("suffix")
    envelope = kwargs.get("_hepai_multipart")
    if kwargs.get("file_id"):
        call = current_call()
        if call is None:
            raise PermissionError("file_id needs a call through the platform")
        file_id = str(kwargs["file_id"])
        data = await asyncio.to_thread(call.read_file, file_id)
        if not name and not suffix:
            name = (await asyncio.to_thread(call.file_info, file_id)).get("filename")
    elif kwargs.get("file_base64") is not None:
        data = decode_base64(kwargs["file_base64"], "file_base64")
    elif kwargs.get("pdf_base64") is not None:
        data, suffix = decode_base64(kwargs["pdf_base64"], "pdf_base64"), suffix or "pdf"
    elif isinstance(envelope, dict) and envelope.get("files"):
        sent = envelope["files"][0]
        data = decode_base64(sent.get("content_base64"), "file")
        name = name or sent.get("filename")
    else:
        raise BadDocument("send the document as file_base64 (with file_name), or a file_id")
    return check_document(
        data,
        name=name if isinstance(name, str) else None,
        suffix=suffix if isinstance(suffix, str) else None,
        max_bytes=settings.tool_max_bytes,
        max_pages=settings.tool_max_pages,
    )
