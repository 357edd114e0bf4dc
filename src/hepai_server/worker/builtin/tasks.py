"""Tasks of the task protocol (wire spec §4.3), and the journal that outlives the worker.

A task is written to the journal when it is submitted, when it starts and when it ends, one
JSON file per task under the worker's own directory. A worker that restarts (a deploy, a
crash, a node reboot) reads its journal back: finished tasks still answer ``status`` and
``result`` until they expire, and a task it was still working on is reported as failed with
the reason, so ``HepAI().parse()`` ends with a clear error instead of polling a task that
no longer exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FINISHED = ("succeeded", "failed", "cancelled")
INTERRUPTED = "the worker restarted before this task finished; submit the file again"


@dataclass
class Task:
    id: str
    owner: str | None
    model: str
    idempotency_key: str | None
    status: str = "queued"
    stage: str = "queued"
    done_pages: int = 0
    total_pages: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    markdown: str | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    #: The coroutine doing the work, while it runs; never journaled.
    runner: asyncio.Task[None] | None = field(default=None, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def public(self) -> dict[str, Any]:
        progress = self.done_pages / self.total_pages if self.total_pages else 0.0
        return {
            "id": self.id,
            "task_id": self.id,
            "object": "task",
            "model": self.model,
            "status": self.status,
            "stage": self.stage,
            "progress": round(progress, 4),
            "pages": {"done": self.done_pages, "total": self.total_pages},
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": {"message": self.error} if self.error else None,
        }

    def record(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "runner"}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Task:
        known = {f.name for f in fields(cls)} - {"runner"}
        return cls(**{k: v for k, v in record.items() if k in known})


class TaskJournal:
    """One worker's tasks on disk: ``<directory>/<task id>.json``, each replaced atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # The records hold users' markdown: readable by the worker's account only.
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def save(self, task: Task) -> None:
        path = self.directory / f"{task.id}.json"
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(task.record(), ensure_ascii=False), encoding="utf-8")
        os.replace(partial, path)

    def forget(self, task_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / f"{task_id}.json").unlink()

    def recover(self, keep_seconds: float) -> list[Task]:
        """The journaled tasks: expired ones dropped, unfinished ones failed as interrupted."""
        horizon = time.time() - keep_seconds
        for leftover in self.directory.glob("*.partial"):  # a write the crash cut short
            leftover.unlink()
        for unreadable in self.directory.glob("*.unreadable"):
            if unreadable.stat().st_mtime < horizon:
                unreadable.unlink()
        tasks = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                task = Task.from_record(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("unreadable task record %s set aside: %s", path.name, exc)
                path.rename(path.with_suffix(".unreadable"))
                continue
            if task.finished_at is not None and task.finished_at < horizon:
                path.unlink()
                continue
            if not task.finished:
                task.status, task.stage, task.error = "failed", "failed", INTERRUPTED
                task.finished_at = time.time()
                self.save(task)
            tasks.append(task)
        return tasks
