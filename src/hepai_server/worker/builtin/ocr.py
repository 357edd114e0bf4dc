"""OCR for MarkItDown: images and scanned PDF pages read by Tesseract (Debian's tessdata,
chi_sim and eng), in process through tesserocr; markitdown itself only describes images with
an LLM, which a platform's own tool must not depend on.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from markitdown import DocumentConverter, DocumentConverterResult, StreamInfo
from markitdown.converters import PdfConverter

TESSDATA = Path("/usr/share/tesseract-ocr/5/tessdata")
LANGUAGES = "chi_sim+eng"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
#: Larger images are refused rather than decoded (a decompression bomb is a few KB of PNG).
MAX_PIXELS = 60_000_000
#: A page with fewer characters than this in its text layer, and an image on it, is a scan.
SCAN_MAX_CHARS = 10
DPI = 300


def read_image(image: Any, languages: str = LANGUAGES) -> str:
    """The text of a PIL image."""
    import tesserocr

    if image.width * image.height > MAX_PIXELS:
        raise ValueError(f"the image is too large to read ({image.width}x{image.height} pixels)")
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    with tesserocr.PyTessBaseAPI(path=str(TESSDATA), lang=languages) as api:
        api.SetImage(image)
        return str(api.GetUTF8Text()).strip()


def scanned_pages(pdf: Any) -> list[int]:
    """Pages with (almost) no text layer but an image: scans, to be read by OCR."""
    import pypdfium2.raw as pdfium_c

    found = []
    for index in range(len(pdf)):
        page = pdf[index]
        if page.get_textpage().count_chars() < SCAN_MAX_CHARS:
            images = page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=3)
            if any(True for _ in images):
                found.append(index)
    return found


class ImageOcrConverter(DocumentConverter):
    """Images → their text."""

    def accepts(self, file_stream: BinaryIO, stream_info: StreamInfo, **kwargs: Any) -> bool:
        return (stream_info.extension or "").lower() in IMAGE_SUFFIXES

    def convert(
        self, file_stream: BinaryIO, stream_info: StreamInfo, **kwargs: Any
    ) -> DocumentConverterResult:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        with Image.open(file_stream) as image:
            image.load()
            return DocumentConverterResult(markdown=read_image(image))


class OcrPdfConverter(PdfConverter):
    """PDFs with a text layer as markitdown reads them; scanned pages through OCR, in order."""

    def convert(
        self, file_stream: BinaryIO, stream_info: StreamInfo, **kwargs: Any
    ) -> DocumentConverterResult:
        import pypdfium2 as pdfium

        data = file_stream.read()
        pdf = pdfium.PdfDocument(data)
        try:
            scans = scanned_pages(pdf)
            if not scans:
                return super().convert(io.BytesIO(data), stream_info, **kwargs)
            return DocumentConverterResult(markdown="\n\n".join(self._pages(pdf, data, scans)))
        finally:
            pdf.close()

    def _pages(self, pdf: Any, data: bytes, scans: list[int]) -> Iterator[str]:
        from pdfminer.high_level import extract_text

        for index in range(len(pdf)):
            if index in scans:
                bitmap = pdf[index].render(scale=DPI / 72, grayscale=True)
                yield read_image(bitmap.to_pil())
            else:
                yield extract_text(io.BytesIO(data), page_numbers=[index]).strip()
