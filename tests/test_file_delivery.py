"""How files are served: the types shown inline, ranges, and names made safe."""

from __future__ import annotations

import pytest

from hepai_server.errors import RangeNotSatisfiable
from hepai_server.files.delivery import (
    ByteRange,
    content_disposition,
    content_type_for,
    display_name,
    parse_range,
)
from tests.test_files import png


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (png(), "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"\x00\x00\x00\x1cftypavif", "image/avif"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'>", "application/octet-stream"),
        (b"<!doctype html><script>", "application/octet-stream"),
        (b"%PDF-1.7", "application/octet-stream"),
        (b"", "application/octet-stream"),
    ],
)
def test_only_raster_images_are_recognised(head: bytes, expected: str) -> None:
    assert content_type_for(head) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", ByteRange(0, 10, 100)),
        ("bytes=90-", ByteRange(90, 100, 100)),
        ("bytes=90-1000", ByteRange(90, 100, 100)),
        ("bytes=-10", ByteRange(90, 100, 100)),
        ("bytes=-1000", ByteRange(0, 100, 100)),
        ("bytes=0-1,5-6", None),
        ("bytes=5-2", None),
        ("items=0-1", None),
        ("bytes=-", None),
    ],
)
def test_ranges(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=150-160", "bytes=-0"])
def test_ranges_outside_the_file_are_416(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


def test_names_are_made_safe_and_encoded() -> None:
    assert display_name("C:\\Users\\a\\..\\报告.pdf") == "报告.pdf"
    assert display_name("x" * 300 + ".txt") == "x" * 255
    assert display_name(None) == "upload"
    header = content_disposition('报告 "final".pdf', inline=False)
    assert header.startswith("attachment; filename=\"__ _final_.pdf\"; filename*=UTF-8''")
    assert "%E6%8A%A5%E5%91%8A%20%22final%22.pdf" in header
