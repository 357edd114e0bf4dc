"""Usage rows: collected in memory as responses finish, written in batches off the request path.

A request appends one row and returns; a background task commits whatever has gathered every
``usage_flush_seconds`` (sooner once a batch is full), one transaction per batch. On shutdown the
server drains what is left before it exits, so a clean stop (SIGTERM) loses nothing.

The same transaction adds the batch to the daily totals (``usage_daily``, what the usage pages
read) and stamps each key's last use, so neither costs the request path anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, or_, update
from sqlalchemy.dialects import postgresql, sqlite

from hepai_server.db.tables import ApiKey, UsageDaily, UsageRecord
from hepai_server.protocol.openai import Usage

log = logging.getLogger(__name__)

#: Rows kept while the database is unreachable; older ones are dropped past this (and logged).
MAX_PENDING = 200_000


class UsageRecorder:
    def __init__(self, engine: Engine, *, flush_seconds: float, batch_size: int) -> None:
        self._engine = engine
        self._flush_seconds = flush_seconds
        self._batch_size = batch_size
        self._pending: list[dict[str, Any]] = []
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def record(
        self,
        *,
        request_id: str,
        user_id: int | None,
        api_key_id: int | None,
        endpoint: str,
        model: str,
        deployment: str | None,
        stream: bool,
        status_code: int,
        usage: Usage,
        latency_ms: float,
        ttft_ms: float | None = None,
        error: str | None = None,
    ) -> None:
        self._pending.append(
            {
                "request_id": request_id,
                "user_id": user_id,
                "api_key_id": api_key_id,
                "endpoint": endpoint,
                "model": model,
                "deployment": deployment,
                "stream": stream,
                "status_code": status_code,
                "error": error[:512] if error else None,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
                "cached_tokens": usage.cached_tokens,
                "reasoning_tokens": usage.reasoning_tokens,
                "pages": usage.pages,
                "bytes": usage.bytes,
                "usage_estimated": usage.estimated,
                "latency_ms": latency_ms,
                "ttft_ms": ttft_ms,
                "created_at": datetime.now(UTC),
            }
        )
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

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._flush_seconds)
            self._full.clear()
            if self._pending:
                await self._flush()

    async def _flush(self) -> bool:
        batch, self._pending = self._pending, []
        written = 0
        try:
            while written < len(batch):
                chunk = batch[written : written + self._batch_size]
                await asyncio.to_thread(self._write, chunk)
                written += len(chunk)
        except Exception:
            # Only what was not committed goes back: a chunk is one transaction.
            log.exception("usage: writing %d rows failed; will retry", len(batch) - written)
            self._pending = (batch[written:] + self._pending)[-MAX_PENDING:]
            return False
        return True

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self._engine.begin() as connection:
            connection.execute(insert(UsageRecord), rows)
            add_to_daily_totals(connection, rows)
            stamp_last_use(connection, rows)


#: The counters of usage_daily, each summed from the usage row field of the same name.
DAILY_SUMS = ("prompt_tokens", "completion_tokens", "total_tokens", "pages", "bytes")


def add_to_daily_totals(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Add the rows to usage_daily with one upsert per (day, user, model) they touch."""
    totals: dict[tuple[Any, int, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["created_at"].date(), row["user_id"] or 0, row["model"])
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
        total["errors"] += row["status_code"] >= 400
        for name in DAILY_SUMS:
            total[name] += row[name] or 0
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(UsageDaily)
    counters = ("requests", "errors", *DAILY_SUMS)
    statement = statement.on_conflict_do_update(
        index_elements=["day", "user_id", "model"],
        set_={name: getattr(UsageDaily, name) + statement.excluded[name] for name in counters},
    )
    # A fixed order keeps concurrent writers (several processes) from deadlocking.
    connection.execute(statement, [totals[key] for key in sorted(totals)])


def stamp_last_use(connection: Connection, rows: list[dict[str, Any]]) -> None:
    last_use: dict[int, datetime] = {}
    for row in rows:
        key_id = row["api_key_id"]
        if key_id:
            last_use[key_id] = max(row["created_at"], last_use.get(key_id, row["created_at"]))
    for key_id in sorted(last_use):
        # Never backwards: another process may have written a later use already.
        connection.execute(
            update(ApiKey)
            .where(
                ApiKey.id == key_id,
                or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < last_use[key_id]),
            )
            .values(last_used_at=last_use[key_id])
        )
