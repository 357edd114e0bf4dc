"""The ledger's rows, and its write-ahead journal: every billable request's start, and its
finished row, appended to a local file before they live only in memory, so a process killed
mid-run loses no usage row.

Each process appends to segments in a directory of its own under ``data_dir/ledger``, which it
holds locked while it runs. A start line is written when a request is admitted, an end line
(the usage row) when it finishes: one ``write`` each, no fsync, since the kernel keeps what was
written when a process dies (a power cut is the database's and the operating system's to
survive). The usage writer rotates to a new segment each time it takes a batch; a segment is
deleted once the rows that ended in it are committed and every request that started in it has
ended. At start-up a process replays the journals of processes that are gone: their rows go to
the database unless they are there already (the ledger is unique by request id), and each
request that started but never ended gets a row of its own, flagged estimated, with the
estimate its start recorded and the status of a request the platform failed (500).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

log = logging.getLogger(__name__)


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
    #: What it cost, in nanos of the currency (governance.prices), at the prices when it ended.
    cost_nanos: int
    #: The ids of the budgets it was charged to, comma-separated, or None.
    budgets: str | None
    client_request_id: str | None
    #: The fallback model that answered, when the requested one could not.
    served_model: str | None
    #: ``time.time()`` when the request ended: the writer makes it a datetime, off the request
    #: path. Always the last field.
    created_at: float


LOCK = "lock"
#: The status and error of a row for a request the platform's process died during.
INTERRUPTED = (500, "the gateway process stopped before the request finished")


class Start(NamedTuple):
    """What a request's row needs if the process dies before it ends."""

    request_id: str
    user_id: int
    api_key_id: int
    endpoint: str
    model: str
    stream: bool
    #: The estimate of its prompt tokens and of their cost, and its budgets.
    prompt_tokens: int
    cost_nanos: int
    budgets: str | None
    client_request_id: str | None
    started_at: float

    def interrupted_row(self) -> UsageRow:
        status, error = INTERRUPTED
        return UsageRow(
            self.request_id,
            self.user_id,
            self.api_key_id,
            self.endpoint,
            self.model,
            None,
            self.stream,
            status,
            error,
            self.prompt_tokens,
            0,
            self.prompt_tokens,
            None,
            None,
            None,
            None,
            True,
            0.0,
            None,
            self.cost_nanos,
            self.budgets,
            self.client_request_id,
            None,
            self.started_at,
        )


@dataclass(slots=True)
class _Segment:
    number: int
    fd: int
    #: Requests that started in this segment and have not ended.
    open: int = 0


class Journal:
    """This process's journal, in a new directory under ``root``."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.directory = root / name
        self.directory.mkdir()
        self._lock = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._segments: dict[int, _Segment] = {}
        self._current = self._open(1)
        #: Segments whose ended rows are all committed.
        self._committed = 0

    def _open(self, number: int) -> _Segment:
        path = self.directory / f"{number:08d}.log"
        segment = _Segment(number, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        self._segments[number] = segment
        return segment

    def started(self, start: Start) -> int:
        """Journal a request's start; the segment it went to (hand it to ``ended``)."""
        segment = self._current
        segment.open += 1
        os.write(segment.fd, b"S" + orjson.dumps(tuple(start)) + b"\n")
        return segment.number

    def ended(self, row: UsageRow, started_in: int | None) -> None:
        """Journal a request's row, ending the start it had in segment ``started_in``."""
        os.write(self._current.fd, b"E" + orjson.dumps(tuple(row)) + b"\n")
        if started_in is not None and (segment := self._segments.get(started_in)) is not None:
            segment.open -= 1

    def rotate(self) -> int:
        """Start a new segment; the number of the one just closed (its rows are all pending)."""
        closed = self._current.number
        self._current = self._open(closed + 1)
        return closed

    def committed(self, through: int) -> None:
        """Every row that ended in segments up to ``through`` is in the database: delete those
        segments in which no request is still open."""
        self._committed = max(self._committed, through)
        for number in sorted(self._segments):
            segment = self._segments[number]
            if number > self._committed or number == self._current.number or segment.open:
                continue
            os.close(segment.fd)
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{number:08d}.log").unlink()
            del self._segments[number]

    def close(self) -> None:
        """Close the files; the directory goes when its rows are committed (``discard``) or is
        replayed by the next process to start."""
        for segment in self._segments.values():
            os.close(segment.fd)
        self._segments.clear()
        os.close(self._lock)

    def discard(self) -> None:
        """Remove the journal: every row it held is committed (a clean shutdown)."""
        for path in self.directory.iterdir():
            path.unlink()
        self.directory.rmdir()


def orphans(root: Path) -> Iterator[tuple[Path, int]]:
    """The journals of processes that are gone, each locked for the caller (its lock's fd)."""
    if not root.is_dir():
        return
    for directory in sorted(root.iterdir()):
        lock_path = directory / LOCK
        if not lock_path.exists():
            continue
        fd = os.open(lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its process is alive
            continue
        yield directory, fd


def read_journal(directory: Path) -> list[UsageRow]:
    """The rows a dead process's journal holds: each ended request's row, and a row for each
    request that started and never ended. A torn last line (the write the kill interrupted) is
    skipped."""
    starts: dict[str, Start] = {}
    rows: dict[str, UsageRow] = {}
    for path in sorted(directory.glob("*.log")):
        for line in path.read_bytes().splitlines():
            kind, payload = line[:1], line[1:]
            try:
                values: list[Any] = orjson.loads(payload)
            except orjson.JSONDecodeError:
                log.warning("journal %s: a torn line skipped", path)
                continue
            if kind == b"S":
                start = Start(*values)
                starts[start.request_id] = start
            elif kind == b"E":
                row = UsageRow(*values)
                rows[row.request_id] = row
    for request_id, start in starts.items():
        rows.setdefault(request_id, start.interrupted_row())
    return list(rows.values())
