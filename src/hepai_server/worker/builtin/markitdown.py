"""MarkItDown: the built-in tool that turns PDF, Office files, HTML and images into markdown.

``hepai-server worker run builtin:markitdown`` serves ``hepai/markitdown`` (the name is a
setting). The call shape is the one the public HepAI tool clients use:

    HepAI().get_remote_model("hepai/markitdown").interface(
        file_base64=..., file_name="report.docx")                 # -> markdown (str)
    ....interface(file_id="file-…")                                # a platform file, read as you
    ....convert(file_base64=..., file_name=...)                    # -> {markdown, metadata}

Built on Microsoft's markitdown with its offline converters only; images and scanned PDF pages
are read by Tesseract. Every file is checked first (documents.py) and converted in a child
process with a memory cap and a deadline (isolation.py).
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

from hepai_server.config import Settings
from hepai_server.worker.builtin.documents import Document, document_from_call
from hepai_server.worker.builtin.isolation import run_isolated
from hepai_server.worker.model import Worker, current_call, remote


def convert_document(document: Document) -> dict[str, Any]:
    """Markdown and metadata for a checked document; runs in the isolated child."""
    from markitdown import MarkItDown, StreamInfo
    from markitdown._exceptions import FileConversionException
    from markitdown.converters import (
        DocxConverter,
        HtmlConverter,
        OutlookMsgConverter,
        PlainTextConverter,
        PptxConverter,
        XlsConverter,
        XlsxConverter,
    )

    from hepai_server.worker.builtin.ocr import ImageOcrConverter, OcrPdfConverter

    started = time.perf_counter()
    # Only the offline converters, chosen here: no zip, URL, YouTube or LLM converters.
    converter = MarkItDown(enable_builtins=False)
    for part in (
        PlainTextConverter(),
        HtmlConverter(),
        OutlookMsgConverter(),
        XlsConverter(),
        XlsxConverter(),
        PptxConverter(),
        DocxConverter(),
        ImageOcrConverter(),
        OcrPdfConverter(),
    ):
        converter.register_converter(part)
    info = StreamInfo(extension="." + document.suffix, filename=document.name)
    try:
        result = converter.convert_stream(io.BytesIO(document.data), stream_info=info)
    except FileConversionException as exc:
        causes = [a.exc_info[1] for a in exc.attempts or [] if a.exc_info is not None]
        if any(isinstance(cause, MemoryError) for cause in causes):
            raise MemoryError from None
        detail = f"{type(causes[0]).__name__}: {causes[0]}" if causes else str(exc)
        raise ValueError(f"{document.name} could not be converted ({detail})") from None
    return {
        "markdown": result.markdown,
        "metadata": {
            "title": result.title,
            "pages": page_count(document),
            "bytes": len(document.data),
            "format": document.suffix,
            "seconds": round(time.perf_counter() - started, 3),
        },
    }


def warm_up() -> None:
    """Import the converters once, here, so every forked conversion starts with them loaded
    (importing markitdown costs a second and a half)."""
    import markitdown.converters  # noqa: F401
    import pypdfium2  # noqa: F401
    import tesserocr  # noqa: F401

    import hepai_server.worker.builtin.ocr  # noqa: F401


def page_count(document: Document) -> int:
    if document.suffix == "pdf":
        import pypdfium2 as pdfium

        pdf = pdfium.PdfDocument(document.data)
        try:
            return len(pdf)
        finally:
            pdf.close()
    if document.suffix == "pptx":
        from pptx import Presentation

        return len(Presentation(io.BytesIO(document.data)).slides)
    return 1


class MarkItDownWorker(Worker):
    """Documents and images to markdown."""

    description = "PDF, Word, PowerPoint, Excel, Outlook, HTML and images to markdown (with OCR)"
    #: Conversions run one per core; more calls wait their turn instead of failing.
    concurrency = 2

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self.name = settings.markitdown_model_name
        self.permission = settings.builtin_permission
        self.settings = settings
        self._slots = asyncio.Semaphore(self.concurrency)
        warm_up()

    async def _convert(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        document = await document_from_call(kwargs, self.settings)
        async with self._slots:
            result: dict[str, Any] = await asyncio.to_thread(
                run_isolated,
                convert_document,
                document,
                timeout=self.settings.tool_timeout_seconds,
                memory_bytes=self.settings.tool_memory_bytes,
            )
        if (call := current_call()) is not None:
            call.report_usage(pages=result["metadata"]["pages"], bytes=len(document.data))
        return result

    # The document's arguments are named (agents and MCP clients read them from the signature);
    # **kwargs takes the older shapes (pdf_base64, the hepai client's multipart upload).
    @remote
    async def interface(
        self,
        file_id: str | None = None,
        file_base64: str | None = None,
        file_name: str | None = None,
        suffix: str | None = None,
        **kwargs: Any,
    ) -> str:
        """A document (PDF, Word, PowerPoint, Excel, HTML, image...) as markdown: a platform
        file_id, or file_base64 with its file_name (or suffix)."""
        named = {"file_id": file_id, "file_base64": file_base64, "file_name": file_name}
        return str((await self._convert({**kwargs, **named, "suffix": suffix}))["markdown"])

    @remote
    async def convert(
        self,
        file_id: str | None = None,
        file_base64: str | None = None,
        file_name: str | None = None,
        suffix: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """A document as ``{"markdown", "metadata": {title, pages, bytes, format, seconds}}``:
        a platform file_id, or file_base64 with its file_name (or suffix)."""
        named = {"file_id": file_id, "file_base64": file_base64, "file_name": file_name}
        return await self._convert({**kwargs, **named, "suffix": suffix})
