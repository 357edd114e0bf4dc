"""Usage rows: collected in memory as responses finish, written in batches off the request path.

A request appends one row and returns; a background task commits whatever has gathered every
``usage_flush_seconds`` (sooner once a batch is full), one transaction per batch. On shutdown the
server drains what is left before it exits, so a clean stop (SIGTERM) loses nothing. While the
database does not answer, rows are kept (up to MAX_PENDING) and the write is retried, less and
less often up to every RETRY_CEILING seconds, until it succeeds.

The same transaction adds the batch to the usage totals (``usage_daily`` per day, user and model,
and the coarser ``usage_model_daily`` and ``usage_user_weekly``: what the usage pages read) and
stamps each key's last use, so none of it costs the request path anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, bindparam, or_, update
from sqlalchemy.dialects import postgresql, sqlite

from hepai_server.db.engine import is_unavailable
from hepai_server.db.governance import BudgetDaily
from hepai_server.db.tables import (
    ApiKey,
    UsageDaily,
    UsageModelDaily,
    UsageRecord,
    UsageUserWeekly,
    UTCDateTime,
)
from hepai_server.gateway.ledger import Journal, UsageRow, orphans, read_journal

log = logging.getLogger(__name__)

#: Rows waiting for the database past which the gateway takes no new requests (503): the
#: ledger is behind (the database is away), and every request must have its row.
MAX_PENDING = 200_000
#: The longest wait between two tries to write while the database does not answer.
RETRY_CEILING = 10.0


class UsageRecorder:
    """Batches usage rows to the database off the request path; every row goes through the
    journal first (gateway/journal.py), so none is lost with the process."""

    def __init__(
        self,
        engine: Engine,
        journal: Journal,
        *,
        flush_seconds: float,
        batch_size: int,
        budget_zone: tzinfo,
    ) -> None:
        self._engine = engine
        self.journal = journal
        self._flush_seconds = flush_seconds
        self._batch_size = batch_size
        self._zone = budget_zone
        self._pending: list[UsageRow] = []
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Failed writes in a row: while there are any, tries back off.
        self.failures = 0
        #: Rows written and failed tries since start, for the metrics.
        self.written = 0
        self.failed_writes = 0

    def record(self, row: UsageRow, started_in: int | None = None) -> None:
        """Queue one request's row (built by its frame, ``Exchange.usage_row``), journaled
        first; ``started_in`` is the journal segment of its start, if it journaled one."""
        self.journal.ended(row, started_in)
        self._pending.append(row)
        if len(self._pending) >= self._batch_size:
            self._full.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def close(self) -> None:
        """Stop the background task and write every row still pending; the journal goes when
        all are written, and stays for the next start to replay when they could not be."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._pending:
            if not await self._flush():
                log.error(
                    "usage: %d rows could not be written at shutdown; they stay in %s for the "
                    "next start to write",
                    len(self._pending),
                    self.journal.directory,
                )
                self.journal.close()
                return
        self.journal.close()
        self.journal.discard()

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
        through = self.journal.rotate()
        batch, self._pending = self._pending, []
        written = 0
        try:
            while written < len(batch):
                chunk = batch[written : written + self._batch_size]
                await asyncio.to_thread(self.write, chunk)
                written += len(chunk)
                self.written += len(chunk)
        except Exception as error:
            # Only what was not committed goes back: a chunk is one transaction. The journal
            # keeps every row until it is; past MAX_PENDING the gateway refuses new requests.
            self._pending = batch[written:] + self._pending
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
        self.journal.committed(through)
        if self.failures:
            log.info("usage: written again after %d failed tries", self.failures)
            self.failures = 0
        return True

    def write(self, rows: Sequence[UsageRow]) -> int:
        """Write rows in one transaction, each request once (rows already in the ledger are
        skipped, totals included); how many were new."""
        with self._engine.begin() as connection:
            return self.write_in(connection, rows)

    def write_in(self, connection: Connection, rows: Sequence[UsageRow]) -> int:
        """Write rows in the caller's transaction, each request once (as ``write``): for work
        whose own record must commit with its row (a batch line's answer)."""
        created = [datetime.fromtimestamp(row.created_at, UTC) for row in rows]
        fresh = insert_rows(connection, rows, created)
        if len(fresh) < len(rows):
            kept = [i for i, row in enumerate(rows) if row.request_id in fresh]
            rows = [rows[i] for i in kept]
            created = [created[i] for i in kept]
        if rows:
            add_to_daily_totals(connection, rows, created)
            add_to_budget_totals(connection, rows, created, self._zone)
            stamp_last_use(connection, rows, created)
        return len(rows)

    def replay(self, root: Path) -> int:
        """Write the rows the journals of dead processes under ``root`` hold; how many were
        new to the ledger. Each journal is removed once its rows are in."""
        written = 0
        for directory, lock in orphans(root):
            try:
                rows = read_journal(directory)
                for first in range(0, len(rows), self._batch_size):
                    written += self.write(rows[first : first + self._batch_size])
                for path in directory.iterdir():
                    path.unlink()
                directory.rmdir()
                log.warning(
                    "usage: replayed %d rows of a process that stopped (%s)", len(rows), directory
                )
            finally:
                os.close(lock)
        return written


def insert_rows(
    connection: Connection, rows: Sequence[UsageRow], created: Sequence[datetime]
) -> set[str]:
    """The rows into usage_records, as few multi-row INSERTs as the driver allows; the request
    ids that were new (a row already in the ledger is left as it is).

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
    fresh: set[str] = set()
    for first in range(0, len(rows), per_statement):
        chunk = rows[first : first + per_statement]
        parameters: list[Any] = []
        for row, stamp in zip(chunk, stamps[first : first + per_statement], strict=True):
            parameters += row[:-1]
            parameters.append(stamp)
        result = connection.exec_driver_sql(
            f"INSERT INTO {quote(UsageRecord.__tablename__)} ({columns}) VALUES "
            + ", ".join([values] * len(chunk))
            + " ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
            tuple(parameters),
        )
        fresh.update(request_id for (request_id,) in result)
    return fresh


def _max_parameters(dialect: Dialect) -> int:
    """How many values one statement may bind: SQLite's default limit (999 before 3.32, 32,766
    since); PostgreSQL's is 65,535."""
    if dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 32):
        return 999
    return 32_766


#: The counters of usage_daily, each summed from the usage row field of the same name.
DAILY_SUMS = ("prompt_tokens", "completion_tokens", "total_tokens", "pages", "bytes", "cost_nanos")
#: The counters of the usage totals, in the order add_to_daily_totals keeps them.
COUNTERS = ("requests", "errors", *DAILY_SUMS)


def add_to_daily_totals(
    connection: Connection, rows: Sequence[UsageRow], created: Sequence[datetime]
) -> None:
    """Add the rows to the usage totals: usage_daily (one upsert per day, user and model they
    touch), and the coarser totals summed from those, usage_model_daily (per day and model) and
    usage_user_weekly (per week and user)."""
    daily: dict[tuple[date, int, str], list[int]] = {}
    for row, moment in zip(rows, created, strict=True):
        key = (moment.date(), row.user_id or 0, row.model)
        total = daily.get(key)
        if total is None:
            total = daily[key] = [0] * len(COUNTERS)
        total[0] += 1
        total[1] += row.status_code >= 400
        for index, name in enumerate(DAILY_SUMS, 2):
            total[index] += getattr(row, name) or 0
    per_model: dict[tuple[date, str], list[int]] = {}
    per_week: dict[tuple[date, int], list[int]] = {}
    for (day, user_id, model), total in daily.items():
        week = day - timedelta(days=day.weekday())
        for bucket in (
            per_model.setdefault((day, model), [0] * len(COUNTERS)),
            per_week.setdefault((week, user_id), [0] * len(COUNTERS)),
        ):
            for index, value in enumerate(total):
                bucket[index] += value
    # Always these tables in this order, each in key order: concurrent writers (several
    # processes) take the rows' locks in one order and never deadlock.
    _add(connection, UsageDaily, ("day", "user_id", "model"), daily)
    _add(connection, UsageModelDaily, ("day", "model"), per_model)
    _add(connection, UsageUserWeekly, ("week", "user_id"), per_week)


def _add(
    connection: Connection,
    table: type[UsageDaily | UsageModelDaily | UsageUserWeekly],
    key: tuple[str, ...],
    totals: dict[Any, list[int]],
) -> None:
    """Add ``totals`` (key values -> counters) to ``table`` with an upsert that adds, so that
    writers in several processes each add their own."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=list(key),
        set_={name: getattr(table, name) + statement.excluded[name] for name in COUNTERS},
    )
    connection.execute(
        statement,
        [
            {
                **dict(zip(key, values, strict=True)),
                **dict(zip(COUNTERS, totals[values], strict=True)),
            }
            for values in sorted(totals)
        ],
    )


def add_to_budget_totals(
    connection: Connection,
    rows: Sequence[UsageRow],
    created: Sequence[datetime],
    zone: tzinfo,
) -> None:
    """Add each row charged to budgets to their days in budget_daily (days in ``zone``, the
    budgets' time zone), one upsert per (budget, day)."""
    totals: dict[tuple[int, date], list[int]] = {}
    for row, moment in zip(rows, created, strict=True):
        if not row.budgets:
            continue
        day = moment.astimezone(zone).date()
        for budget_id in row.budgets.split(","):
            total = totals.setdefault((int(budget_id), day), [0, 0, 0])
            total[0] += 1
            total[1] += row.cost_nanos
            total[2] += row.total_tokens or 0
    if not totals:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(BudgetDaily)
    counters = ("requests", "cost_nanos", "tokens")
    statement = statement.on_conflict_do_update(
        index_elements=["budget_id", "day"],
        set_={name: getattr(BudgetDaily, name) + statement.excluded[name] for name in counters},
    )
    connection.execute(
        statement,
        [
            {"budget_id": key[0], "day": key[1], **dict(zip(counters, totals[key], strict=True))}
            for key in sorted(totals)
        ],
    )


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
