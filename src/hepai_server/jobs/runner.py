"""JobRunner: what the platform's services ask of the job runner, and the choice of one.

A service registers a *kind* of job: the coroutine that does one job, given its payload, and
the coroutine that lists the jobs of that kind the database says are unfinished. It then
submits jobs by kind and key; submitting a key that is already waiting or running does
nothing more, so a job can be submitted by every replica that notices it without running
twice at once. Handlers must be idempotent: after a crash a job runs again from the start of
whatever step it had not recorded as done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hepai_server.config import Settings

Payload = dict[str, Any]
Handler = Callable[[Payload], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of background work: its kind, its key (unique within the kind) and what the
    handler needs (JSON)."""

    kind: str
    key: str
    payload: Payload


#: The unfinished jobs of a kind, from the database.
Pending = Callable[[], Awaitable[list[Job]]]


class JobRunner(Protocol):
    def register(self, kind: str, handler: Handler, pending: Pending) -> None:
        """Before ``start``: how to run jobs of ``kind`` and how to find unfinished ones."""

    async def start(self) -> None:
        """Begin running jobs, the unfinished ones first."""

    async def submit(self, job: Job) -> None:
        """Run the job soon, unless a job of the same kind and key is waiting or running."""

    async def close(self) -> None:
        """Stop taking jobs; running ones stop where they are and are found again later."""


def is_postgres(settings: Settings) -> bool:
    return settings.sqlalchemy_url.startswith("postgresql")


def open_runner(settings: Settings) -> JobRunner:
    """The runner the settings choose: ``job_queue``, where ``auto`` means procrastinate on a
    PostgreSQL database and the in-process runner on SQLite."""
    from hepai_server.jobs.local import LocalRunner
    from hepai_server.jobs.postgres import PostgresRunner

    queue = settings.job_queue
    if queue == "auto":
        queue = "procrastinate" if is_postgres(settings) else "in-process"
    if queue == "in-process":
        return LocalRunner(
            concurrency=settings.job_concurrency, recovery_seconds=settings.job_recovery_seconds
        )
    if not is_postgres(settings):
        raise ValueError("the procrastinate job queue needs a PostgreSQL database_url")
    return PostgresRunner(
        conninfo=libpq_url(settings.sqlalchemy_url),
        concurrency=settings.job_concurrency,
        recovery_seconds=settings.job_recovery_seconds,
        heartbeat_seconds=min(10.0, settings.job_stalled_seconds / 3),
        stalled_seconds=settings.job_stalled_seconds,
    )


def libpq_url(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg://…`` as libpq takes it."""
    return "postgresql://" + sqlalchemy_url.split("://", 1)[1]
