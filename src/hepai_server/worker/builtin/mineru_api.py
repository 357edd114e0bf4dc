"""The ``mineru-api`` engine of hepai/mineru: MinerU itself, with its models, on a GPU node.

MinerU (2.x) serves its full pipeline behind its own API server, ``mineru-api``, which loads
the models once (from local directories: ``MINERU_MODEL_SOURCE=local`` and its
``mineru.json``) and keeps them on the GPU. The worker stays light: it checks the document,
splits it into windows of pages, sends each window to ``POST /file_parse`` and hands back
each window's markdown and images as they come, so a task's progress moves a window at a
time and a cancelled task sends nothing more. The backend (``pipeline``,
``hybrid-auto-engine``, ``vlm-http-client`` with a ``mineru-vllm-server`` …) is MinerU's
choice of models and is passed through as configured.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from hepai_server.worker.builtin.isolation import run_isolated
from hepai_server.worker.builtin.layout import Page
from hepai_server.worker.model import UpstreamFailed

#: Pages sent in one call: MinerU's context for merging across pages, and the step of progress.
PAGES_PER_CALL = 8
#: MinerU answers 503 while it is at its concurrency limit; ask again after this long.
BUSY_RETRY_SECONDS = 1.0


class MinerUUnavailable(ConnectionError):
    """MinerU's API server cannot be reached, or stays at its limit: 503."""


class MinerUFailed(UpstreamFailed):
    """MinerU answered with a failure of its own: 502, not retried by clients as a 503 is."""


@dataclass(frozen=True, slots=True)
class MinerUServer:
    """A ``mineru-api`` server and how to ask it."""

    url: str
    backend: str
    #: The VLM server for MinerU's ``*-http-client`` backends.
    vlm_url: str | None
    #: The longest one window of pages may take.
    timeout: float
    #: What splitting the document may take beyond the worker's memory (it runs isolated).
    memory_bytes: int
    language: str = "ch"

    async def convert(
        self, data: bytes, name: str, emit: Callable[[tuple[Any, ...]], None]
    ) -> None:
        """Every page of the PDF through MinerU, emitted as layout.convert_document emits
        them; a window's markdown comes as its first page's."""
        # Isolated: PDFium is not thread-safe, and a crafted file must not take the worker down.
        windows: list[tuple[list[int], bytes]] = await asyncio.to_thread(
            run_isolated,
            split,
            data,
            PAGES_PER_CALL,
            timeout=self.timeout,
            memory_bytes=self.memory_bytes,
        )
        emit(("pages", sum(len(pages) for pages, _ in windows)))
        stem = name.rsplit(".", 1)[0] or "document"
        async with aiohttp.ClientSession() as session:
            for pages, window in windows:
                markdown, images = await self._window(session, window, stem)
                emit(("page", pages[0], (markdown.strip(), images)))
                for index in pages[1:]:
                    emit(("page", index, ("", {})))

    async def _window(self, session: aiohttp.ClientSession, pdf: bytes, stem: str) -> Page:
        deadline = time.monotonic() + self.timeout
        while True:
            form = aiohttp.FormData()
            form.add_field("files", pdf, filename=f"{stem}.pdf", content_type="application/pdf")
            form.add_field("backend", self.backend)
            form.add_field("lang_list", self.language)
            form.add_field("return_md", "true")
            form.add_field("return_images", "true")
            if self.vlm_url:
                form.add_field("server_url", self.vlm_url)
            left = deadline - time.monotonic()
            try:
                async with session.post(
                    f"{self.url.rstrip('/')}/file_parse",
                    data=form,
                    timeout=aiohttp.ClientTimeout(total=max(left, 0.001)),
                ) as response:
                    status, body = response.status, await response.read()
            except TimeoutError:
                raise TimeoutError(
                    f"MinerU took longer than {self.timeout:g} s for {PAGES_PER_CALL} pages"
                ) from None
            except aiohttp.ClientError as exc:
                raise MinerUUnavailable(f"MinerU cannot be reached: {exc}") from None
            if status == 503 and time.monotonic() + BUSY_RETRY_SECONDS < deadline:
                await asyncio.sleep(BUSY_RETRY_SECONDS)  # at its limit: wait for a turn
                continue
            return answer(status, body, stem)


def answer(status: int, body: bytes, stem: str) -> Page:
    """The markdown and images of one answer of ``/file_parse``."""
    import orjson

    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = {"error": body[:200].decode("utf-8", "replace")}
    if status == 400:  # MinerU could not read the document
        raise ValueError(f"MinerU refused the document: {parsed.get('error')}")
    if status == 503:
        raise MinerUUnavailable(f"MinerU stayed at its limit: {parsed.get('detail') or parsed}")
    if status != 200:
        raise MinerUFailed(f"MinerU answered {status}: {parsed.get('error') or parsed}")
    result = next(iter(parsed.get("results", {}).values()), None)
    if result is None or result.get("md_content") is None:
        raise MinerUFailed(f"MinerU answered no markdown for {stem}")
    images = {
        f"images/{image_name}": base64.b64decode(url.split(",", 1)[-1])
        for image_name, url in (result.get("images") or {}).items()
    }
    return str(result["md_content"]), images


def split(data: bytes, size: int) -> list[tuple[list[int], bytes]]:
    """The PDF in windows of ``size`` pages: each window's page indices and its own PDF."""
    import pypdfium2 as pdfium

    source = pdfium.PdfDocument(data)
    try:
        windows = []
        for start in range(0, len(source), size):
            pages = list(range(start, min(start + size, len(source))))
            window = pdfium.PdfDocument.new()
            window.import_pages(source, pages)
            out = io.BytesIO()
            window.save(out)
            window.close()
            windows.append((pages, out.getvalue()))
        return windows
    finally:
        source.close()
