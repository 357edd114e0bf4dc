"""Batches: the Batch API's service, and the background job that answers a batch's lines.

A batch is one job of the platform's job runner (jobs/), keyed by its id. The job validates the
input file (protocol/batches.py) into the batch's lines, answers every line not yet answered,
then writes the output and error files as the owner's files. Each line is a call as the
owner's own would be, answered and billed once however often it runs (batch_lines.py). A
line the limits refuse (429) is not answered but tried again later, until the batch's
completion window ends.

A process that dies mid-batch leaves the answered lines recorded and the rest owed;
its claim on the batch (a lease, renewed while it runs) lapses, and the runner's recovery has
another process take the batch up where it was. At most ``batch_concurrency`` lines of one
model are in flight in one process, across all its batches, so live calls keep the rest of a
model's capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hepai_server.db.tables import ApiKey, Batch, BatchLine, StoredFile, User
from hepai_server.errors import InvalidRequest, NotFound
from hepai_server.files.spool import Spool
from hepai_server.gateway.batch_lines import LineCalls, Owed, count_owed, owed_lines
from hepai_server.gateway.runtime import Gateway
from hepai_server.jobs.runner import Job, JobRunner
from hepai_server.protocol.batches import (
    COMPLETION_WINDOWS,
    ENDPOINTS,
    FINAL,
    Line,
    check_metadata,
    error,
    output_line,
    parse_lines,
)
from hepai_server.services import batches as store
from hepai_server.services.accounts import Caller, caller_of

log = logging.getLogger(__name__)

KIND = "batches.run"
#: How often a running batch looks whether it was cancelled, expired or lost its claim.
WATCH_SECONDS = 1.0
#: Lines read from the database at once, to answer or to write into the output files: a
#: batch of 50,000 embeddings is never held in memory whole.
PAGE_LINES = 1000
PAGE_LIMIT = 100


def job_for(batch_id: str) -> Job:
    return Job(KIND, batch_id, {"batch_id": batch_id})


@dataclass(slots=True)
class Run:
    """One run of a batch's job: its claim, and whether it must stop starting lines."""

    batch_id: str
    endpoint: str
    expires_at: int
    lease_owner: str
    stop: asyncio.Event
    lost: bool = False
    #: Why the batch fails while it runs (its owner or key went), as its ``errors``.
    failure: list[Any] | None = None


class Batches:
    def __init__(
        self,
        gateway: Gateway,
        runner: JobRunner,
        clock: Callable[[], float] = time.time,
        page_lines: int = PAGE_LINES,
    ) -> None:
        self.gateway = gateway
        self.page_lines = page_lines
        self.runner = runner
        self.clock = clock
        settings = gateway.settings
        self.per_model = settings.batch_concurrency
        self.retry_seconds = settings.batch_retry_seconds
        self.max_lines = settings.batch_max_lines
        #: The largest input file read: it is held in memory while it is checked.
        self.max_bytes = settings.batch_max_bytes
        self.lease_seconds = settings.job_stalled_seconds
        self.lines = LineCalls(gateway)
        #: Lines in flight per model, across this process's batches.
        self._slots: dict[str, asyncio.Semaphore] = {}
        runner.register(KIND, self.run, self.pending)

    # -- the API --------------------------------------------------------------------------------

    async def create(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(
                f"'endpoint' must be one of {', '.join(ENDPOINTS)}", param="endpoint"
            )
        window = body.get("completion_window")
        if window not in COMPLETION_WINDOWS:
            raise InvalidRequest(
                f"'completion_window' must be {', '.join(COMPLETION_WINDOWS)}",
                param="completion_window",
            )
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise InvalidRequest("'input_file_id' is required", param="input_file_id")
        metadata = check_metadata(body.get("metadata"))
        file = await self.gateway.files.get(user_id=caller.user_id, file_id=file_id)
        if file.purpose != "batch":
            raise InvalidRequest(
                f"file {file_id} has purpose {file.purpose!r}; upload the input with "
                "purpose 'batch'",
                param="input_file_id",
            )
        now = self.clock()

        def work(session: Session) -> dict[str, Any]:
            batch = store.create_batch(
                session,
                user_id=caller.user_id,
                api_key_id=caller.key_id,
                endpoint=str(endpoint),
                input_file_id=file_id,
                completion_window=str(window),
                metadata=metadata,
                now=now,
            )
            return store.batch_object(batch)

        created = await self.gateway.transact(work)
        await self.runner.submit(job_for(created["id"]))
        return created

    async def get(self, caller: Caller, batch_id: str) -> dict[str, Any]:
        return await self.gateway.transact(
            lambda s: store.batch_object(
                store.get_batch(s, user_id=caller.user_id, batch_id=batch_id)
            )
        )

    async def page(
        self, caller: Caller, *, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        def work(session: Session) -> tuple[list[dict[str, Any]], bool]:
            rows, more = store.page_batches(
                session, user_id=caller.user_id, after=after, limit=limit
            )
            return [store.batch_object(row) for row in rows], more

        return await self.gateway.transact(work)

    async def cancel(self, caller: Caller, batch_id: str) -> dict[str, Any]:
        now = self.clock()
        cancelled = await self.gateway.transact(
            lambda s: store.batch_object(
                store.cancel_batch(s, user_id=caller.user_id, batch_id=batch_id, now=now)
            )
        )
        if cancelled["status"] == "cancelling":
            await self.runner.submit(job_for(batch_id))  # finishes it if no run holds it
        return cancelled

    # -- the job --------------------------------------------------------------------------------

    async def pending(self) -> list[Job]:
        """Every batch the database says is still owed work."""
        unfinished = await self.gateway.transact(store.unfinished_batches)
        return [job_for(batch_id) for batch_id in unfinished]

    async def run(self, payload: dict[str, Any]) -> None:
        """The job: take the batch up where it is (see the module's docstring)."""
        batch_id = str(payload["batch_id"])
        owner = secrets.token_hex(8)
        batch = await self.gateway.transact(lambda s: self._claim(s, batch_id, owner))
        if batch is None:
            return
        run = Run(batch.id, batch.endpoint, batch.expires_at, owner, asyncio.Event())
        watcher = asyncio.create_task(self._watch(run), name=f"batch-watch:{batch_id}")
        try:
            status = batch.status
            if status == "validating":
                status = await self._validate(run, batch)
            if status in ("in_progress", "cancelling"):
                await self._answer(run)
            if not run.lost and status != "failed":
                await self._finalize(run)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if not run.lost:
                await self.gateway.transact(lambda s: self._release(s, run))

    def _claim(self, session: Session, batch_id: str, owner: str) -> Batch | None:
        """Claim the batch for this run, unless it is finished or another live run holds it
        (several processes may each find the same unfinished batch)."""
        batch = session.get(Batch, batch_id, with_for_update=True)
        if batch is None or batch.status in FINAL:
            return None
        now = self.clock()
        if batch.lease_until is not None and batch.lease_until > now:
            return None
        batch.lease_owner, batch.lease_until = owner, now + self.lease_seconds
        session.flush()
        session.expunge(batch)
        return batch

    def _renew(self, session: Session, run: Run) -> str | None:
        """Renew the claim; the batch's status (``revoked`` when its owner or key no longer
        may call), or None when the claim was lost."""
        batch = session.get(Batch, run.batch_id, with_for_update=True)
        if batch is None or batch.lease_owner != run.lease_owner:
            return None
        batch.lease_until = self.clock() + self.lease_seconds
        if self._owner(session, run.batch_id) is None:
            return "revoked"
        return batch.status

    def _release(self, session: Session, run: Run) -> None:
        session.execute(
            update(Batch)
            .where(Batch.id == run.batch_id, Batch.lease_owner == run.lease_owner)
            .values(lease_owner=None, lease_until=None)
        )

    async def _watch(self, run: Run) -> None:
        """Renew the claim every WATCH_SECONDS; stop starting lines when the batch is
        cancelled, expires, or the claim is lost (this process was taken for dead and another
        runs the batch)."""
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                status = await self.gateway.transact(lambda s: self._renew(s, run))
            except Exception:
                log.warning("batch %s: renewing its claim failed", run.batch_id, exc_info=True)
                continue
            if status is None:
                log.warning("batch %s: another process took it over", run.batch_id)
                run.lost = True
            elif status == "revoked":
                run.failure = owner_gone(run.batch_id)
            if status in (None, "cancelling", "revoked") or self.clock() >= run.expires_at:
                run.stop.set()

    # -- validation -----------------------------------------------------------------------------

    async def _validate(self, run: Run, batch: Batch) -> str:
        """Read the input file into the batch's lines (in_progress), or fail the batch with
        the errors found; the status it is left in."""
        gateway = self.gateway
        file = await gateway.transact(lambda s: s.get(StoredFile, batch.input_file_id))
        lines: list[Line] = []
        errors: list[Any] = []
        if file is None or file.user_id != batch.user_id:
            message = f"the input file {batch.input_file_id} was deleted"
            errors.append(error("invalid_file", message, param="input_file_id"))
        elif file.bytes > self.max_bytes:
            message = (
                f"the input file has {file.bytes} bytes; a batch takes at most "
                f"{self.max_bytes}: split it into several batches"
            )
            errors.append(error("file_too_large", message, param="input_file_id"))
        else:
            raw = b"".join([chunk async for chunk in await gateway.files.open(file)])
            lines, errors = await asyncio.to_thread(
                parse_lines, raw, endpoint=batch.endpoint, max_lines=self.max_lines
            )
        now = int(self.clock())

        def work(session: Session) -> str:
            row = session.get(Batch, batch.id, with_for_update=True)
            if row is None or row.lease_owner != run.lease_owner:
                run.lost = True
                return "lost"
            if row.status == "cancelling":
                return row.status  # cancelled before it was read: nothing to answer
            if errors:
                row.status, row.failed_at, row.errors = "failed", now, errors
                return row.status
            session.add_all(
                BatchLine(
                    batch_id=batch.id,
                    line=line.index,
                    custom_id=line.custom_id,
                    body=line.body,
                    model=line.model[:256],
                    done=False,
                )
                for line in lines
            )
            row.status, row.in_progress_at, row.total = "in_progress", now, len(lines)
            return row.status

        return await gateway.transact(work)

    # -- answering ------------------------------------------------------------------------------

    async def _answer(self, run: Run) -> None:
        """Answer every line still owed, each model's at most ``batch_concurrency`` at once
        in this process, until all are answered or the run must stop."""
        owner = await self.gateway.transact(lambda s: self._owner(s, run.batch_id))
        if owner is None:
            run.failure = owner_gone(run.batch_id)
            return
        owed = await self.gateway.transact(lambda s: count_owed(s, run.batch_id))
        log.info("batch %s: answering its %d lines still owed", run.batch_id, owed)
        after = -1
        while not run.stop.is_set():
            page = await self.gateway.transact(
                partial(owed_lines, batch_id=run.batch_id, after=after, limit=self.page_lines)
            )
            if not page:
                return
            await self._answer_page(run, owner, page)
            after = page[-1].index

    async def _answer_page(self, run: Run, owner: Caller, page: list[Owed]) -> None:
        queue = deque(page)
        models = {line.model for line in page}
        workers = min(len(page), self.per_model * len(models))

        async def work() -> None:
            while queue and not run.stop.is_set():
                await self._settle_line(run, owner, queue.popleft())

        await asyncio.gather(*(work() for _ in range(workers)))

    def _owner(self, session: Session, batch_id: str) -> Caller | None:
        """Who the batch's lines are called as: its owner through the key that created it
        (that key's limits on models); None when either was disabled or revoked."""
        batch = session.get(Batch, batch_id)
        user = session.get(User, batch.user_id) if batch is not None else None
        if batch is None or user is None or user.disabled:
            return None
        key = session.get(ApiKey, batch.api_key_id) if batch.api_key_id else None
        if key is not None and key.revoked_at is not None:
            return None
        return caller_of(user, key)

    async def _settle_line(self, run: Run, owner: Caller, line: Owed) -> None:
        """Answer one line, trying again after a while for as long as the limits refuse it
        and the run goes on."""
        slots = self._slots.setdefault(line.model, asyncio.Semaphore(self.per_model))
        while not run.stop.is_set():
            async with slots:
                if run.stop.is_set():
                    return
                if await self.lines.answer(run.batch_id, run.endpoint, owner, line):
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.stop.wait(), self.retry_seconds)

    # -- finalizing -----------------------------------------------------------------------------

    async def _finalize(self, run: Run) -> None:
        """Write the output and error files and end the batch: cancelled when it was asked
        to, expired when its window ended with lines unanswered, else completed."""
        gateway = self.gateway
        now = int(self.clock())

        def begin(session: Session) -> tuple[int, str, int] | None:
            """The batch's owner, how it ends and how many lines it leaves unanswered, once
            that is known (it is finalizing from here); None when this run is done."""
            batch = session.get(Batch, run.batch_id, with_for_update=True)
            if batch is None or batch.lease_owner != run.lease_owner or batch.status in FINAL:
                return None
            owed = count_owed(session, run.batch_id)
            if run.failure is not None:
                final = "failed"
            elif batch.status == "cancelling":
                final = "cancelled"
            elif owed and now >= run.expires_at:
                final = "expired"
            elif owed:
                return None  # stopped early (the claim was lost): another run goes on
            else:
                final = "completed"
            if batch.status == "in_progress":
                batch.status, batch.finalizing_at = "finalizing", now
            return batch.user_id, final, owed

        begun = await gateway.transact(begin)
        if begun is None:
            return
        user_id, final, owed = begun
        unanswered = {
            "failed": error_of("invalid_api_key", (run.failure or [{}])[0].get("message", "")),
            "cancelled": error_of("batch_cancelled", "the batch was cancelled"),
            "expired": error_of(
                "batch_expired",
                "the request could not be run before the batch's completion window ended",
            ),
        }.get(final)
        output, errors = await self._write_files(run.batch_id, user_id, unanswered)

        def end(session: Session) -> bool:
            batch = session.get(Batch, run.batch_id, with_for_update=True)
            if batch is None or batch.lease_owner != run.lease_owner or batch.status in FINAL:
                return False
            batch.output_file_id, batch.error_file_id = output, errors
            batch.status = final
            if run.failure is not None:
                batch.errors = run.failure
            setattr(batch, f"{final}_at", int(self.clock()))
            if final == "expired":
                batch.failed += owed
            return True

        if not await gateway.transact(end):
            for file_id in (output, errors):
                if file_id is not None:
                    with contextlib.suppress(NotFound):
                        await gateway.files.delete(user_id=user_id, file_id=file_id)

    async def _write_files(
        self, batch_id: str, user_id: int, unanswered: dict[str, Any] | None
    ) -> tuple[str | None, str | None]:
        """The output file (the lines answered 2xx) and the error file (the others, and
        with ``unanswered`` the lines never answered), read a page at a time; each None
        when it would be empty."""
        files = self.gateway.files
        spools = [
            Spool(files.storage.spool_dir, limit=2**62, too_large=files.file_too_large)
            for _ in range(2)
        ]
        async with spools[0] as good, spools[1] as bad:
            after = -1
            while page := await self.gateway.transact(
                partial(line_page, batch_id=batch_id, after=after, limit=self.page_lines)
            ):
                for line in page:
                    if line.done:
                        ok = 200 <= (line.status_code or 0) < 300
                        await (good if ok else bad).write(answer_line(batch_id, line))
                    elif unanswered is not None:
                        await bad.write(unanswered_line(batch_id, line, unanswered))
                after = page[-1].line
            names = ("output", "error")
            return (
                await self._keep(user_id, f"{batch_id}_{names[0]}.jsonl", good),
                await self._keep(user_id, f"{batch_id}_{names[1]}.jsonl", bad),
            )

    async def _keep(self, user_id: int, name: str, spool: Spool) -> str | None:
        """The spool as a file of the owner's (purpose batch_output), or None when empty.
        Results already paid for are kept whatever the owner's storage quota says."""
        if not spool.size:
            return None
        stored = await self.gateway.files.add(
            user_id=user_id,
            spooled=await spool.finish(),
            filename=name,
            purpose="batch_output",
            enforce_quota=False,
        )
        return stored.id


def line_page(session: Session, batch_id: str, *, after: int, limit: int) -> list[BatchLine]:
    """Up to ``limit`` of the batch's lines after line ``after``, in order, answers and all."""
    lines = list(
        session.scalars(
            select(BatchLine)
            .where(BatchLine.batch_id == batch_id, BatchLine.line > after)
            .order_by(BatchLine.line)
            .limit(limit)
        )
    )
    session.expunge_all()
    return lines


def owner_gone(batch_id: str) -> list[Any]:
    """The errors of a batch whose owner was disabled or whose key was revoked."""
    log.warning("batch %s: its owner or key is gone; the rest is not run", batch_id)
    message = "the account or API key that created the batch was disabled or revoked"
    return [error("invalid_api_key", message)]


def unanswered_line(batch_id: str, line: BatchLine, failure: dict[str, Any]) -> bytes:
    return output_line(
        batch_id=batch_id,
        index=line.line,
        custom_id=line.custom_id,
        status_code=None,
        body=None,
        failure=failure,
    )


def error_of(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def answer_line(batch_id: str, line: BatchLine) -> bytes:
    return output_line(
        batch_id=batch_id,
        index=line.line,
        custom_id=line.custom_id,
        status_code=line.status_code,
        body=line.response,
        failure=None,
    )
