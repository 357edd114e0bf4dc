"""PostgresRunner: jobs on procrastinate, a task queue kept in the platform's PostgreSQL.

Several replicas share one database, so they share its queue: a job deferred by one is run
by whichever replica's worker takes it first (``SELECT … FOR UPDATE SKIP LOCKED`` inside
procrastinate), with nothing to run beside the database. The job's key is both its queueing
lock (a second submit while one waits is refused, and ignored here) and its lock (never two
runs of one key at once); a submit while one runs is ignored too, as the runner's contract
says (procrastinate would queue it behind the lock and run the key again). Each replica's
worker sends heartbeats; the jobs of a replica that stopped sending them (killed mid-job) are
put back in the queue by the recovery loop of the others, and each kind's unfinished jobs are
looked up in the database and submitted again, so work also survives a restart of every
replica.

procrastinate's own tables (procrastinate_*) are created at the first start when missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued, UniqueViolation
from procrastinate.jobs import Status

from hepai_server.jobs.runner import Handler, Job, Pending

log = logging.getLogger(__name__)
#: Keeps two replicas from creating procrastinate's tables at the same moment.
SCHEMA_LOCK = 4260016
#: How long closing waits for the job worker to stop.
STOP_SECONDS = 5.0


class PostgresRunner:
    def __init__(
        self,
        *,
        conninfo: str,
        concurrency: int,
        recovery_seconds: float,
        heartbeat_seconds: float = 10.0,
        stalled_seconds: float = 30.0,
    ) -> None:
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=conninfo, min_size=1, max_size=max(2, concurrency + 1)
            )
        )
        self._pending: dict[str, Pending] = {}
        self._concurrency = concurrency
        self._recovery_seconds = recovery_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._stalled_seconds = stalled_seconds
        self._worker: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None

    def register(self, kind: str, handler: Handler, pending: Pending) -> None:
        async def run(**payload: Any) -> None:
            await handler(payload)

        run.__name__ = run.__qualname__ = kind.replace(".", "_")
        self.app.task(name=kind, pass_context=False)(run)
        self._pending[kind] = pending

    async def start(self) -> None:
        await self.app.open_async()
        await self._ensure_schema()
        self._worker = asyncio.create_task(
            self.app.run_worker_async(
                concurrency=self._concurrency,
                install_signal_handlers=False,
                update_heartbeat_interval=self._heartbeat_seconds,
                stalled_worker_timeout=self._stalled_seconds,
                delete_jobs="successful",
                listen_notify=True,
            ),
            name="job-worker",
        )
        self._recovery = asyncio.create_task(self._recover_now_and_then(), name="job-recovery")

    async def _ensure_schema(self) -> None:
        connector = self.app.connector
        exists = await connector.execute_query_one_async(
            "SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present"
        )
        if exists["present"]:
            return
        pool = connector.pool  # type: ignore[attr-defined]  # PsycopgConnector's own pool
        async with pool.connection() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            # A scan of pg_class, not to_regclass: taking an advisory lock does not refresh
            # the catalog cache, so to_regclass could still miss the tables the replica that
            # held the lock just created (and creating them again fails).
            found = await connection.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class"
                " WHERE relname = 'procrastinate_jobs' AND relkind = 'r')"
            )
            row = await found.fetchone()
            if row is not None and row[0]:
                return
            await connection.execute(procrastinate.schema.SchemaManager.get_schema())
        log.info("created procrastinate's tables")

    async def submit(self, job: Job) -> None:
        # Work noticed between this check and the running job's end is not lost: each kind's
        # unfinished jobs are looked up and submitted again by the recovery loop.
        running = await self.app.connector.execute_query_one_async(
            "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs"
            " WHERE lock = %(key)s AND status = 'doing') AS running",
            key=job.key,
        )
        if running["running"]:
            return
        deferrer = self.app.configure_task(job.kind, lock=job.key, queueing_lock=job.key)
        with contextlib.suppress(AlreadyEnqueued):
            await deferrer.defer_async(**job.payload)

    async def _recover_now_and_then(self) -> None:
        while True:
            try:
                await self.recover()
            except Exception:
                log.warning("recovering unfinished jobs failed", exc_info=True)
            await asyncio.sleep(self._recovery_seconds)

    async def recover(self) -> None:
        """Requeue the jobs of workers that stopped sending heartbeats; submit every kind's
        unfinished jobs again."""
        manager = self.app.job_manager
        for stalled in await manager.get_stalled_jobs(
            seconds_since_heartbeat=self._stalled_seconds
        ):
            log.warning("job %s of a stalled worker goes back in the queue", stalled.id)
            try:
                await manager.retry_job(stalled)
            except UniqueViolation:
                # A job of the same key was submitted again meanwhile (the unfinished-job
                # lister found its work) and waits for this one's lock: end this one, so the
                # waiting one runs. Handlers are idempotent; nothing is lost.
                assert stalled.id is not None
                await manager.finish_job_by_id_async(
                    stalled.id, status=Status.FAILED, delete_job=True
                )
        for kind, pending in self._pending.items():
            for job in await pending():
                await self.submit(job)
            log.debug("submitted the unfinished %s jobs", kind)

    async def close(self) -> None:
        tasks = {task for task in (self._recovery, self._worker) if task is not None}
        # Cancelled again until they stop, within a bound: a cancellation that lands while
        # psycopg or procrastinate is starting a query can be swallowed (the task then goes
        # on as if nothing happened), and procrastinate's worker waits for its running jobs.
        # A job cut here is picked up by another replica once its heartbeat stops, or by
        # this one's next start.
        deadline = asyncio.get_running_loop().time() + STOP_SECONDS
        while tasks and asyncio.get_running_loop().time() < deadline:
            for task in tasks:
                task.cancel()
            stopped, tasks = await asyncio.wait(tasks, timeout=1.0)
            for task in stopped:  # what it ended with is of no use now: taken, not logged
                task.cancelled() or task.exception()
        for task in tasks:
            log.warning("the job %s did not stop within %g s", task.get_name(), STOP_SECONDS)
        await self.app.close_async()
