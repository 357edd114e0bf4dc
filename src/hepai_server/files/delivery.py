"""Delivery: how a stored file is sent back safely: its type, its disposition, its range.

A file is user content served from the platform's own origin, so it must never be able to act
as a page of the platform. Only raster images, recognised by their first bytes (never by the
name or type the uploader claimed), are served inline; everything else, HTML and SVG included,
is an ``application/octet-stream`` attachment. Every answer also carries ``nosniff`` and a
sandboxing Content-Security-Policy, so even a browser that renders the bytes runs no script
with the platform's cookies or origin.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

from hepai_server.errors import RangeNotSatisfiable

OCTET_STREAM = "application/octet-stream"

#: The formats served inline, by signature. Written out rather than taken from a sniffing
#: library because this list is a security decision: none of these formats can carry script.
_IMAGE_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"BM", 0, "image/bmp"),
    (b"\x00\x00\x01\x00", 0, "image/x-icon"),
)

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; img-src 'self'; sandbox",
    "cross-origin-resource-policy": "cross-origin",
    "referrer-policy": "no-referrer",
}


def sniff_image(head: bytes) -> str | None:
    """The MIME type of a raster image from its first bytes, or None."""
    for signature, offset, mime in _IMAGE_SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "image/avif"
    return None


def content_type_for(head: bytes) -> str:
    return sniff_image(head) or OCTET_STREAM


def is_inline(content_type: str) -> bool:
    return content_type != OCTET_STREAM


def display_name(filename: str | None, fallback: str = "upload") -> str:
    """A client's filename made safe to store and show: its last path component, without
    control characters, at most 255 characters. It is never used as a path."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    if name in ("", ".", ".."):
        name = fallback
    return name[:255]


def content_disposition(filename: str, *, inline: bool) -> str:
    """RFC 6266: an ASCII fallback and the exact name in RFC 5987 encoding."""
    ascii_name = re.sub(r"[^A-Za-z0-9._ -]", "_", filename) or "download"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``start`` to ``end`` exclusive, of a file of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _outside(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(f"the requested range is outside the file's {size} bytes")


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range a ``Range`` header asks for, or None for the whole file.

    A header this does not understand (another unit, several ranges) is ignored, as RFC 9110
    allows, and the whole file is sent; a range that starts past the end is refused (416).
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # bytes=-N: the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise _outside(size)
        return ByteRange(max(0, size - suffix), size, size)
    start = int(first)
    if last != "" and int(last) < start:
        return None  # not a valid range: ignored, like any header this does not understand
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size or end <= start:
        raise _outside(size)
    return ByteRange(start, end, size)
