"""LocalRunner: jobs as tasks of this process's event loop, for the embedded default.

One process owns the data directory's SQLite database, so a queue of its own is all it needs:
at most ``concurrency`` jobs run at once, a key that is waiting or running is not queued again,
and what a restart interrupted is found again from the database when the runner starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hepai_server.jobs.runner import Handler, Job, Pending

log = logging.getLogger(__name__)


class LocalRunner:
    def __init__(self, *, concurrency: int, recovery_seconds: float) -> None:
        self._handlers: dict[str, Handler] = {}
        self._pending: dict[str, Pending] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._recovery_seconds = recovery_seconds
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._recovery: asyncio.Task[None] | None = None

    def register(self, kind: str, handler: Handler, pending: Pending) -> None:
        self._handlers[kind] = handler
        self._pending[kind] = pending

    async def start(self) -> None:
        self._recovery = asyncio.create_task(self._recover_now_and_then(), name="job-recovery")

    async def submit(self, job: Job) -> None:
        if job.kind not in self._handlers:
            raise LookupError(f"no job kind {job.kind!r} is registered")
        key = (job.kind, job.key)
        if key in self._running:
            return
        self._running[key] = asyncio.create_task(self._run(job), name=f"job:{job.kind}")

    async def _run(self, job: Job) -> None:
        try:
            async with self._slots:
                await self._handlers[job.kind](job.payload)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s %s failed", job.kind, job.key)
        finally:
            self._running.pop((job.kind, job.key), None)

    async def _recover_now_and_then(self) -> None:
        while True:
            for kind, pending in self._pending.items():
                try:
                    for job in await pending():
                        await self.submit(job)
                except Exception:
                    log.warning("finding unfinished %s jobs failed", kind, exc_info=True)
            await asyncio.sleep(self._recovery_seconds)

    async def idle(self) -> None:
        """Wait until no job is running (for tests and benchmarks)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def close(self) -> None:
        tasks = [*self._running.values()]
        if self._recovery is not None:
            tasks.append(self._recovery)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
