"""Batches in the database: creating, finding, listing and cancelling a user's batches, and
the Batch object they are shown as.

Every lookup is by (owner, id): someone else's batch answers exactly like a missing one.
Processing (the lines, their answers, the output files) is gateway/batches.py's.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hepai_server.db.tables import Batch
from hepai_server.errors import Conflict, NotFound
from hepai_server.protocol.batches import COMPLETION_WINDOWS

#: The statuses of a batch that still has work owed: the job runner finds these after a
#: restart, or when the process that worked on one died.
UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")


def new_batch_id(now: float) -> str:
    """``batch_``, the time in milliseconds, then 80 random bits: ids sort by creation, so a
    page of batches is a range of ids."""
    return f"batch_{int(now * 1000):012x}{secrets.token_hex(10)}"


def create_batch(
    session: Session,
    *,
    user_id: int,
    api_key_id: int | None,
    endpoint: str,
    input_file_id: str,
    completion_window: str,
    metadata: dict[str, str] | None,
    now: float,
) -> Batch:
    """A new batch, validating: its file (already checked to be the caller's) is read by its
    job."""
    batch = Batch(
        id=new_batch_id(now),
        user_id=user_id,
        api_key_id=api_key_id or None,
        endpoint=endpoint,
        input_file_id=input_file_id,
        completion_window=completion_window,
        status="validating",
        metadata_=metadata,
        total=0,
        completed=0,
        failed=0,
        input_tokens=0,
        output_tokens=0,
        created_at=int(now),
        expires_at=int(now) + COMPLETION_WINDOWS[completion_window],
    )
    session.add(batch)
    session.flush()
    return batch


def get_batch(session: Session, *, user_id: int, batch_id: str) -> Batch:
    batch = session.get(Batch, batch_id)
    if batch is None or batch.user_id != user_id:
        raise NotFound(f"no batch with id {batch_id}", param="batch_id")
    return batch


def page_batches(
    session: Session, *, user_id: int, after: str | None, limit: int
) -> tuple[list[Batch], bool]:
    """A page of the user's batches, newest first, after the batch ``after``; and whether
    more follow."""
    query = select(Batch).where(Batch.user_id == user_id)
    if after:
        query = query.where(Batch.id < after)
    rows = list(session.scalars(query.order_by(Batch.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def cancel_batch(session: Session, *, user_id: int, batch_id: str, now: float) -> Batch:
    """Ask for the batch to stop: it is cancelling until its job has ended the lines in
    flight and written what was answered, then cancelled. Cancelling a batch that is
    cancelling or cancelled changes nothing; one that ended otherwise cannot be."""
    batch = get_batch(session, user_id=user_id, batch_id=batch_id)
    if batch.status in ("cancelling", "cancelled"):
        return batch
    if batch.status not in ("validating", "in_progress"):
        raise Conflict(f"a batch that is {batch.status} cannot be cancelled")
    batch.status, batch.cancelling_at = "cancelling", int(now)
    session.flush()
    return batch


def unfinished_batches(session: Session) -> list[str]:
    return list(session.scalars(select(Batch.id).where(Batch.status.in_(UNFINISHED))))


def batch_object(batch: Batch) -> dict[str, Any]:
    """The batch as OpenAI's Batch object."""
    errors = {"object": "list", "data": batch.errors} if batch.errors is not None else None
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": errors,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": batch.created_at,
        "in_progress_at": batch.in_progress_at,
        "expires_at": batch.expires_at,
        "finalizing_at": batch.finalizing_at,
        "completed_at": batch.completed_at,
        "failed_at": batch.failed_at,
        "expired_at": batch.expired_at,
        "cancelling_at": batch.cancelling_at,
        "cancelled_at": batch.cancelled_at,
        "request_counts": {
            "total": batch.total,
            "completed": batch.completed,
            "failed": batch.failed,
        },
        "usage": {
            "input_tokens": batch.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": batch.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": batch.input_tokens + batch.output_tokens,
        },
        "metadata": batch.metadata_,
    }
