"""Usage rows: collected in memory as responses finish, written in batches off the request path.

A request appends one row and returns; a background task commits whatever has gathered every
``usage_flush_seconds`` (sooner once a batch is full), one transaction per batch. On shutdown the
server drains what is left before it exits, so a clean stop (SIGTERM) loses nothing. While the
database does not answer, rows are kept (up to MAX_PENDING) and the write is retried, less and
less often up to every RETRY_CEILING seconds, until it succeeds.

The same transaction adds the batch to the daily totals (``usage_daily``, what the usage pages
read) and stamps each key's last use, so neither costs the request path anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Dialect, Engine, bindparam, or_, update
from sqlalchemy.dialects import postgresql, sqlite

from hepai_server.db.engine import is_unavailable
from hepai_server.db.tables import ApiKey, UsageDaily, UsageRecord, UTCDateTime

log = logging.getLogger(__name__)

#: Rows kept while the database is unreachable; older ones are dropped past this (and logged).
MAX_PENDING = 200_000
#: The longest wait between two tries to write while the database does not answer.
RETRY_CEILING = 10.0


class UsageRow(NamedTuple):
    """One row of usage_records, its fields named and ordered as the table's columns.

    A tuple, not a dict, since every request makes one.
    """

    request_id: str
    user_id: int | None
    api_key_id: int | None
    endpoint: str
    model: str
    deployment: str | None
    stream: bool
    status_code: int
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    pages: int | None
    bytes: int | None
    usage_estimated: bool
    latency_ms: float
    ttft_ms: float | None
    #: ``time.time()`` when the request ended: the writer makes it a datetime, off the request
    #: path.
    created_at: float


class UsageRecorder:
    def __init__(self, engine: Engine, *, flush_seconds: float, batch_size: int) -> None:
        self._engine = engine
        self._flush_seconds = flush_seconds
        self._batch_size = batch_size
        self._pending: list[UsageRow] = []
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Failed writes in a row: while there are any, tries back off.
        self.failures = 0
        #: Rows written and failed tries since start, for the metrics.
        self.written = 0
        self.failed_writes = 0

    def record(self, row: UsageRow) -> None:
        """Queue one request's row (built by its frame, ``Exchange.usage_row``)."""
        self._pending.append(row)
        if len(self._pending) >= self._batch_size:
            self._full.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def close(self) -> None:
        """Stop the background task and write every row still pending."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._pending:
            if not await self._flush():
                log.error(
                    "usage: %d rows could not be written at shutdown",
                    len(self._pending),
                )
                return

    @property
    def pending(self) -> int:
        """Rows recorded and not yet written."""
        return len(self._pending)

    def oldest(self) -> float | None:
        """When the oldest row not yet written was recorded (epoch seconds), if any waits."""
        pending = self._pending
        return pending[0].created_at if pending else None

    async def _run(self) -> None:
        while True:
            if self.failures:
                await asyncio.sleep(self.retry_delay())
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._flush_seconds)
            self._full.clear()
            if self._pending:
                await self._flush()

    def retry_delay(self) -> float:
        """The wait before the next try after ``failures`` failed ones: doubling, capped."""
        return min(self._flush_seconds * 2.0 ** min(self.failures, 16), RETRY_CEILING)

    async def _flush(self) -> bool:
        batch, self._pending = self._pending, []
        written = 0
        try:
            while written < len(batch):
                chunk = batch[written : written + self._batch_size]
                await asyncio.to_thread(self._write, chunk)
                written += len(chunk)
                self.written += len(chunk)
        except Exception as error:
            # Only what was not committed goes back: a chunk is one transaction.
            self._pending = (batch[written:] + self._pending)[-MAX_PENDING:]
            if not self.failures:
                log.warning(
                    "usage: writing %d rows failed (%s); keeping them and retrying",
                    len(batch) - written,
                    error,
                    exc_info=not is_unavailable(error),
                )
            self.failures += 1
            self.failed_writes += 1
            return False
        if self.failures:
            log.info("usage: written again after %d failed tries", self.failures)
            self.failures = 0
        return True

    def _write(self, rows: list[UsageRow]) -> None:
        created = [datetime.fromtimestamp(row.created_at, UTC) for row in rows]
        with self._engine.begin() as connection:
            insert_rows(connection, rows, created)
            add_to_daily_totals(connection, rows, created)
            stamp_last_use(connection, rows, created)


def insert_rows(
    connection: Connection, rows: Sequence[UsageRow], created: Sequence[datetime]
) -> None:
    """The rows into usage_records, as few multi-row INSERTs as the driver allows.

    Through the driver itself: SQLAlchemy's insert() processes every value of every row in
    Python, and sqlite3's executemany gives up and retakes the GIL for each row, where one
    statement of many rows is a single call into the driver.
    """
    dialect = connection.dialect
    # Stored exactly as SQLAlchemy stores this column (a text format of its own on SQLite).
    store = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    stamps = [store(moment) for moment in created] if store is not None else list(created)
    quote = dialect.identifier_preparer.quote
    columns = ", ".join(quote(name) for name in UsageRow._fields)
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    values = "(" + ", ".join([marker] * len(UsageRow._fields)) + ")"
    per_statement = _max_parameters(dialect) // len(UsageRow._fields)
    for first in range(0, len(rows), per_statement):
        chunk = rows[first : first + per_statement]
        parameters: list[Any] = []
        for row, stamp in zip(chunk, stamps[first : first + per_statement], strict=True):
            parameters += row[:-1]
            parameters.append(stamp)
        connection.exec_driver_sql(
            f"INSERT INTO {quote(UsageRecord.__tablename__)} ({columns}) VALUES "
            + ", ".join([values] * len(chunk)),
            tuple(parameters),
        )


def _max_parameters(dialect: Dialect) -> int:
    """How many values one statement may bind: SQLite's default limit (999 before 3.32, 32,766
    since); PostgreSQL's is 65,535."""
    if dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 32):
        return 999
    return 32_766


#: The counters of usage_daily, each summed from the usage row field of the same name.
DAILY_SUMS = ("prompt_tokens", "completion_tokens", "total_tokens", "pages", "bytes")


def add_to_daily_totals(
    connection: Connection, rows: Sequence[UsageRow], created: Sequence[datetime]
) -> None:
    """Add the rows to usage_daily with one upsert per (day, user, model) they touch."""
    totals: dict[tuple[date, int, str], dict[str, Any]] = {}
    for row, moment in zip(rows, created, strict=True):
        key = (moment.date(), row.user_id or 0, row.model)
        total = totals.get(key)
        if total is None:
            total = totals[key] = {
                "day": key[0],
                "user_id": key[1],
                "model": key[2],
                "requests": 0,
                "errors": 0,
                **dict.fromkeys(DAILY_SUMS, 0),
            }
        total["requests"] += 1
        total["errors"] += row.status_code >= 400
        for name in DAILY_SUMS:
            total[name] += getattr(row, name) or 0
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(UsageDaily)
    counters = ("requests", "errors", *DAILY_SUMS)
    statement = statement.on_conflict_do_update(
        index_elements=["day", "user_id", "model"],
        set_={name: getattr(UsageDaily, name) + statement.excluded[name] for name in counters},
    )
    # A fixed order keeps concurrent writers (several processes) from deadlocking.
    connection.execute(statement, [totals[key] for key in sorted(totals)])


def stamp_last_use(
    connection: Connection, rows: Sequence[UsageRow], created: Sequence[datetime]
) -> None:
    last_use: dict[int, datetime] = {}
    for row, moment in zip(rows, created, strict=True):
        key_id = row.api_key_id
        if key_id:
            last_use[key_id] = max(moment, last_use.get(key_id, moment))
    if not last_use:
        return
    used = bindparam("used", type_=UTCDateTime())
    # Never backwards: another process may have written a later use already.
    statement = (
        update(ApiKey)
        .where(
            ApiKey.id == bindparam("key_id"),
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < used),
        )
        .values(last_used_at=used)
    )
    # In key order, so that concurrent writers take the rows' locks in the same order.
    connection.execute(statement, [{"key_id": k, "used": last_use[k]} for k in sorted(last_use)])
