"""Layout-aware PDF to markdown with docvortex (MinerU's model-free engine) on the CPU.

Headings, tables as markdown tables, the reading order of multi-column pages. Pages without a
text layer (scans) are read by Tesseract instead. docvortex leaves display formulas as empty
image blocks (MinerU fills them with a model), so their text is put back from the PDF's own
text layer: the symbols survive, as Unicode rather than LaTeX.

Figures come back as images beside each page's markdown, which links them as ``images/…``;
the worker inlines them or stores them as platform files (mineru.py).

Runs inside the isolated child (isolation.py): one child converts a whole document and emits
each page as soon as it is done, so a task's progress moves page by page. Text pages are parsed
a window at a time, because docvortex reads a window as one document (running headers and
footers found across its pages, heading levels from its fonts); scanned pages, the slow ones,
are read one at a time.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

from hepai_server.worker.builtin.ocr import DPI, read_image, scanned_pages

#: Text pages parsed together: context for paragraphs and headers within (about 0.3 s of
#: work on this machine's CPU, so progress still moves every fraction of a second).
WINDOW = 8
#: A markdown image whose target is one of the engine's extracted images.
IMAGE_LINK = re.compile(r"(!\[[^\]]*\]\()(images/[^)\s]+)(\))")

#: One page: its markdown and the images it links, by the name it links them with.
Page = tuple[str, dict[str, bytes]]
#: What a conversion emits: ("pages", total) once, then ("page", index, Page) for each page.
Emit = Callable[[tuple[Any, ...]], None]


def quiet() -> None:
    """docvortex logs every step at DEBUG through loguru."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def warm_up() -> None:
    """Import the engine once, in the worker, so every forked conversion starts with it."""
    import docvortex
    import docvortex.api  # noqa: F401
    import pypdfium2  # noqa: F401
    import tesserocr  # noqa: F401

    quiet()


def classify(data: bytes) -> list[bool]:
    """For each page, whether it is a scan."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    try:
        scans = set(scanned_pages(pdf))
        return [index in scans for index in range(len(pdf))]
    finally:
        pdf.close()


def convert_document(emit: Emit, data: bytes) -> None:
    """Every page of the PDF, emitted as it is done (see Emit); pages may come out of order."""
    import pypdfium2 as pdfium

    quiet()
    scans = classify(data)
    emit(("pages", len(scans)))
    pdf = pdfium.PdfDocument(data)
    try:
        for start in range(0, len(scans), WINDOW):
            window = range(start, min(start + WINDOW, len(scans)))
            text_pages = [index for index in window if not scans[index]]
            if text_pages:
                parsed = parse_text_pages(data, pdf, text_pages)
                for index, page in zip(text_pages, parsed, strict=True):
                    emit(("page", index, page))
            for index in window:
                if scans[index]:
                    bitmap = pdf[index].render(scale=DPI / 72, grayscale=True)
                    emit(("page", index, (read_image(bitmap.to_pil()).strip(), {})))
    finally:
        pdf.close()


def parse_text_pages(data: bytes, pdf: Any, pages: list[int]) -> list[Page]:
    """Markdown and images for each of ``pages`` (0-based, with a text layer), in order."""
    import docvortex
    from docvortex.api import render

    result = docvortex.parse(
        data,
        file_suffix="pdf",
        page_range=",".join(str(index + 1) for index in pages),
        parse_mode="txt",
    )
    fill_equations(result, pdf)
    rendered: dict[int, Page] = {}
    for page in result.middle_json.pages:
        one = result.middle_json.model_copy(update={"pages": [page]})
        content = render(one, "markdown", assets=result.assets).content.decode("utf-8")
        images: dict[str, bytes] = {}
        for _, name, _ in IMAGE_LINK.findall(content):
            if (image := result.assets.get(name)) is not None:
                images[name] = image
        rendered[page.page_idx] = (content.strip(), images)
    return [rendered.get(index, ("", {})) for index in pages]


def fill_equations(result: Any, pdf: Any) -> None:
    """Put the PDF's text back into the equation blocks docvortex leaves empty, as $$…$$."""
    for page in result.middle_json.pages:
        pdf_page = pdf[page.page_idx]
        width, height = pdf_page.get_size()
        text_page = pdf_page.get_textpage()
        for block in page.blocks:
            if getattr(block, "type", None) != "equation" or (block.content or "").strip():
                continue
            x0, y0, x1, y1 = block.bbox  # 0..1, from the top left
            text = text_page.get_text_bounded(
                left=x0 * width - 1,
                bottom=(1 - y1) * height - 1,
                right=x1 * width + 1,
                top=(1 - y0) * height + 1,
            )
            if text := " ".join(text.split()):
                block.content = text
