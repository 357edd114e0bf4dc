"""MinerU: the built-in layout-aware PDF tool (``hepai-server worker run builtin:mineru``).

Two ways to call it, both public HepAI shapes:

    tool.interface(file_base64=..., file_name="paper.pdf")     # -> markdown, synchronously
    HepAI().parse("paper.pdf", model="hepai/mineru")           # the task protocol (§4.3):
        submit(file_id=…) -> task; status(task_id); result(task_id); cancel(task_id)

The engine is docvortex on the CPU (layout.py) by default. A document converts in one
isolated child, which hands back each page as it is done: a task's progress moves page by
page, and cancelling a task kills its child. On GPU nodes the engine is MinerU itself, with
its models, behind its own API server (mineru_api.py). Tasks are journaled on disk
(tasks.py), so a restarted worker still answers for them; finished ones are kept for an hour.

Figures survive as images: the direct call inlines them in the markdown as data URLs (one
self-contained string); a task stores each as a platform file of the caller, links it by its
preview URL, and lists it among the task's artifacts beside the markdown.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from hepai_server.config import Settings
from hepai_server.worker.builtin.documents import Document, document_from_call
from hepai_server.worker.builtin.isolation import run_isolated
from hepai_server.worker.builtin.layout import IMAGE_LINK, Page, convert_document, warm_up
from hepai_server.worker.builtin.mineru_api import MinerUServer
from hepai_server.worker.builtin.tasks import INTERRUPTED, Task, TaskJournal
from hepai_server.worker.model import CallContext, Worker, current_call, remote

KEEP_FINISHED_SECONDS = 3600
CONVERSIONS = 2
log = logging.getLogger(__name__)
IMAGE_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png"}


@dataclass(frozen=True, slots=True)
class Converted:
    """A document's markdown and the images it links (``images/…``), by that name."""

    markdown: str
    images: dict[str, bytes]
    #: Each page's markdown, in order (empty for a page with no text).
    pages: tuple[str, ...] = ()


def link_images(markdown: str, targets: dict[str, str]) -> str:
    """Point each image link at its new target (a data URL or a file's preview URL)."""
    return IMAGE_LINK.sub(
        lambda m: m.group(1) + targets.get(m.group(2), m.group(2)) + m.group(3), markdown
    )


def data_url(name: str, image: bytes) -> str:
    kind = IMAGE_TYPES.get(name.rsplit(".", 1)[-1].lower(), "application/octet-stream")
    return f"data:{kind};base64,{base64.b64encode(image).decode()}"


class MinerUWorker(Worker):
    """Layout-aware PDF to markdown: headings, tables, multi-column reading order, formulas."""

    description = "Layout-aware PDF to markdown (docvortex on CPU or MinerU on GPU), OCR for scans"
    concurrency = 8

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self.name = settings.mineru_model_name
        self.permission = settings.builtin_permission
        self.settings = settings
        # Conversions at once, one per core, in two pools: a long task (up to 2,000 pages)
        # never holds up a direct call, whose caller is waiting on the line.
        self._call_slots = asyncio.Semaphore(CONVERSIONS)
        self._task_slots = asyncio.Semaphore(CONVERSIONS)
        self._tasks: dict[str, Task] = {}
        self._journal: TaskJournal | None = None
        self._server: MinerUServer | None = None
        if settings.mineru_engine == "mineru-api":
            if not settings.mineru_api_url:
                raise ValueError("the mineru-api engine needs HEPAI_SERVER_MINERU_API_URL")
            self._server = MinerUServer(
                url=settings.mineru_api_url,
                backend=settings.mineru_backend,
                vlm_url=settings.mineru_vlm_url,
                timeout=settings.tool_timeout_seconds,
                memory_bytes=settings.tool_memory_bytes,
            )
        else:
            warm_up()

    def on_start(self, worker_id: str) -> None:
        """Open this worker's task journal and take back the tasks it already held."""
        self._journal = TaskJournal(self.settings.task_root / worker_id)
        for task in self._journal.recover(KEEP_FINISHED_SECONDS):
            self._tasks[task.id] = task

    def on_stop(self) -> None:
        """Running tasks end as interrupted (what a restarted worker reports of them), and
        their conversions are killed rather than waited for."""
        for task in self._tasks.values():
            if not task.finished and task.runner is not None:
                task.status, task.stage, task.error = "failed", "failed", INTERRUPTED
                task.finished_at = time.time()
                self._save(task)
                task.runner.cancel()

    def _save(self, task: Task) -> None:
        """Journal the task; a journal that cannot be written costs the restart's memory of
        it, never the task itself."""
        if self._journal is None:
            return
        try:
            self._journal.save(task)
        except OSError as exc:
            log.warning("task %s could not be journaled: %s", task.id, exc)

    # -- input ---------------------------------------------------------------------------------

    async def _pdf(self, kwargs: dict[str, Any]) -> Document:
        """The PDF of a call; without a name or suffix (the older pdf_base64 calls) it is one."""
        named = any(kwargs.get(k) for k in ("suffix", "file_name", "filename", "file_id"))
        document = await document_from_call(
            kwargs if named else {**kwargs, "suffix": "pdf"}, self.settings
        )
        if document.suffix != "pdf":
            raise ValueError(f"{document.name} is not a PDF; hepai/markitdown converts other files")
        return document

    async def _convert(self, document: Document, task: Task | None = None) -> Converted:
        """The document's markdown, converted in one isolated child (or by MinerU's server);
        a task's progress is moved as each page comes back."""
        pages: dict[int, Page] = {}
        total = 0
        stop = threading.Event()
        loop = asyncio.get_running_loop()

        def progress(done: int, of: int) -> None:  # on the event loop, in order
            if task is not None and not task.finished:
                task.total_pages, task.done_pages = of, done
                task.stage = f"converting: {done} of {of} pages done"

        def arrived(item: tuple[Any, ...]) -> None:  # in the conversion's thread
            nonlocal total
            if item[0] == "pages":
                total = item[1]
            else:
                pages[item[1]] = item[2]
            if task is not None and not stop.is_set():
                loop.call_soon_threadsafe(progress, len(pages), total)

        slots = self._call_slots if task is None else self._task_slots
        try:
            async with slots:
                if self._server is not None:
                    await self._server.convert(document.data, document.name, arrived)
                else:
                    await asyncio.to_thread(
                        run_isolated,
                        convert_document,
                        document.data,
                        timeout=self.settings.tool_timeout_seconds,
                        memory_bytes=self.settings.tool_memory_bytes,
                        on_item=arrived,
                        stop=stop,
                    )
        finally:
            stop.set()  # a cancelled call takes its conversion with it
        if (call := current_call()) is not None:
            call.report_usage(pages=total, bytes=len(document.data))
        ordered = [pages.get(index, ("", {})) for index in range(total)]
        markdown = "\n\n".join(text for text, _images in ordered if text) + "\n"
        return Converted(
            markdown,
            {name: image for _, images in ordered for name, image in images.items()},
            tuple(text for text, _images in ordered),
        )

    # -- the direct call -------------------------------------------------------------------------

    @remote
    async def interface(
        self,
        file_id: str | None = None,
        file_base64: str | None = None,
        file_name: str | None = None,
        **kwargs: Any,
    ) -> str:
        """A PDF as markdown, read with its layout (tables, formulas, figures inlined as data
        URLs): a platform file_id, or file_base64 (or pdf_base64) with its file_name."""
        named = {"file_id": file_id, "file_base64": file_base64, "file_name": file_name}
        converted = await self._convert(await self._pdf({**kwargs, **named}))
        inline = {name: data_url(name, image) for name, image in converted.images.items()}
        return link_images(converted.markdown, inline)

    @remote
    async def convert(self, **kwargs: Any) -> dict[str, Any]:
        """``{"markdown", "pages": [each page's markdown], "metadata": {"pages", "bytes"}}``,
        for indexing (knowledge bases cite pages): figures stay links to their names."""
        document = await self._pdf(kwargs)
        converted = await self._convert(document)
        return {
            "markdown": converted.markdown,
            "pages": list(converted.pages),
            "metadata": {"pages": len(converted.pages), "bytes": len(document.data)},
        }

    # -- the task protocol -----------------------------------------------------------------------

    @remote
    async def submit(
        self,
        file_id: str,
        options: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Start converting a platform file; answers the task at once."""
        call = current_call()
        owner = call.user_id if call else None
        self._forget_old()
        if idempotency_key:
            for known in self._tasks.values():
                if known.owner == owner and known.idempotency_key == idempotency_key:
                    return known.public()
        document = await self._pdf({"file_id": file_id})
        task = Task(
            id=f"task-{secrets.token_hex(12)}",
            owner=owner,
            model=self.name,
            idempotency_key=idempotency_key,
        )
        self._tasks[task.id] = task
        self._save(task)
        task.runner = asyncio.create_task(self._run(task, document, call))
        return task.public()

    async def _run(self, task: Task, document: Document, call: CallContext | None) -> None:
        task.status, task.started_at = "running", time.time()
        self._save(task)
        try:
            converted = await self._convert(document, task)
            if call is None:
                inline = {name: data_url(name, image) for name, image in converted.images.items()}
                task.markdown = link_images(converted.markdown, inline)
            else:
                task.stage = "storing the result"
                images = await self._store_images(call, converted.images, document)
                task.markdown = link_images(
                    converted.markdown, {name: art["url"] for name, art in images.items()}
                )
                markdown = await self._store(call, task.markdown, document)
                task.artifacts = [markdown, *images.values()]
            task.status, task.stage = "succeeded", "done"
        except asyncio.CancelledError:
            if not task.finished:  # cancel() or on_stop() may have said how it ended
                task.status, task.stage = "cancelled", "cancelled"
        except Exception as exc:
            task.status, task.stage, task.error = "failed", "failed", f"{type(exc).__name__}: {exc}"
        finally:
            task.finished_at, task.runner = time.time(), None
            self._save(task)

    async def _store(self, call: CallContext, markdown: str, document: Document) -> dict[str, Any]:
        """The markdown as a platform file of the caller: the task's artifact."""
        content = markdown.encode()
        name = document.name.rsplit(".", 1)[0] + ".md"
        stored = await asyncio.to_thread(call.store_file, content, name)
        return {
            "type": "markdown",
            "file_id": stored["id"],
            "filename": name,
            "metadata": {
                "bytes": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
                "format": "md",
            },
        }

    async def _store_images(
        self, call: CallContext, images: dict[str, bytes], document: Document
    ) -> dict[str, dict[str, Any]]:
        """Each figure as a platform file of the caller: its artifact, with the preview URL
        the markdown links it by."""
        stem = document.name.rsplit(".", 1)[0]
        stored: dict[str, dict[str, Any]] = {}
        for name, image in images.items():
            filename = f"{stem}-{name.rsplit('/', 1)[-1]}"
            answer = await asyncio.to_thread(call.store_file, image, filename)
            stored[name] = {
                "type": "image",
                "file_id": answer["id"],
                "filename": filename,
                "url": answer.get("preview_url", ""),
                "metadata": {
                    "bytes": len(image),
                    "sha256": hashlib.sha256(image).hexdigest(),
                    "format": filename.rsplit(".", 1)[-1],
                },
            }
        return stored

    def _owned(self, task_id: str) -> Task:
        call = current_call()
        task = self._tasks.get(task_id)
        if task is None or task.owner != (call.user_id if call else None):
            raise FileNotFoundError(f"no task {task_id}")
        return task

    @remote
    async def status(self, task_id: str) -> dict[str, Any]:
        return self._owned(task_id).public()

    @remote
    async def result(self, task_id: str) -> dict[str, Any]:
        task = self._owned(task_id)
        if task.status != "succeeded":
            raise ValueError(f"task {task_id} is {task.status}, not succeeded")
        return {
            "task_id": task.id,
            "markdown": task.markdown,
            "artifacts": task.artifacts,
            "metadata": {"pages": task.total_pages, "markdown_filename": "result.md"},
        }

    @remote
    async def cancel(self, task_id: str) -> dict[str, Any]:
        task = self._owned(task_id)
        if not task.finished and task.runner is not None:
            task.runner.cancel()
            task.status, task.stage, task.finished_at = "cancelled", "cancelled", time.time()
            self._save(task)
        return task.public()

    def _forget_old(self) -> None:
        horizon = time.time() - KEEP_FINISHED_SECONDS
        for task_id in [
            t.id for t in self._tasks.values() if t.finished_at and t.finished_at < horizon
        ]:
            del self._tasks[task_id]
            if self._journal is not None:
                self._journal.forget(task_id)
