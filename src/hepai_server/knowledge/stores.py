"""The rows of knowledge bases: who may read or change a store, and what the wire tells of
stores and their files. Functions take an open session; callers commit.

A store is its owner's; others read it when it is shared with them (a group of theirs, ``all``,
or their username). To anyone else it answers exactly as a store that does not exist (404),
so ids cannot be probed; a reader who tries to change it gets 403.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, aliased

from hepai_server.db.tables import User, VectorStore, VectorStoreFile
from hepai_server.errors import NotFound, PermissionDenied
from hepai_server.protocol.vector_stores import FileCounts, StoreFacts, StoreFileFacts
from hepai_server.services.accounts import Caller

STATUSES = ("in_progress", "completed", "failed", "cancelled")


def new_id(prefix: str) -> str:
    """``vs_``/``vsfb_`` and 128 random bits."""
    return f"{prefix}_{secrets.token_hex(16)}"


def can_read(store: VectorStore, caller: Caller) -> bool:
    if store.user_id == caller.user_id:
        return True
    groups = set(store.shared_groups or ())
    return (
        "all" in groups
        or bool(groups & caller.groups)
        or caller.username in (store.shared_users or ())
    )


def missing(store_id: str) -> NotFound:
    shown = store_id if len(store_id) <= 64 else store_id[:64] + "…"
    return NotFound(f"No vector store found with id '{shown}'.", param="vector_store_id")


def readable(session: Session, caller: Caller, store_id: str) -> VectorStore:
    store = session.get(VectorStore, store_id)
    if store is None or not can_read(store, caller):
        raise missing(store_id)
    return store


def owned(session: Session, caller: Caller, store_id: str) -> VectorStore:
    store = readable(session, caller, store_id)
    if store.user_id != caller.user_id:
        raise PermissionDenied(
            "this vector store is shared with you to read; only its owner may change it"
        )
    return store


def mine(session: Session, caller: Caller, store_id: str) -> VectorStore:
    """The caller's own store. Any other, even one shared with them to read, answers as
    missing: the portal's pages for a store are its owner's only."""
    store = session.get(VectorStore, store_id)
    if store is None or store.user_id != caller.user_id:
        raise missing(store_id)
    return store


def store_file(session: Session, store: VectorStore, file_id: str) -> VectorStoreFile:
    row = session.get(VectorStoreFile, (store.id, file_id))
    if row is None:
        shown = file_id if len(file_id) <= 64 else file_id[:64] + "…"
        raise NotFound(f"No file found with id '{shown}' in vector store '{store.id}'.")
    return row


def readable_stores(session: Session, caller: Caller) -> list[VectorStore]:
    """Every store the caller may read, newest first."""
    query = select(VectorStore).where(
        or_(VectorStore.user_id == caller.user_id, VectorStore.shared.is_(True))
    )
    rows = session.scalars(query.order_by(VectorStore.created_at.desc(), VectorStore.id.desc()))
    return [store for store in rows if can_read(store, caller)]


def file_counts(session: Session, store_ids: Sequence[str]) -> dict[str, FileCounts]:
    counts: dict[str, dict[str, int]] = {store_id: {} for store_id in store_ids}
    if store_ids:
        rows = session.execute(
            select(VectorStoreFile.store_id, VectorStoreFile.status, func.count())
            .where(VectorStoreFile.store_id.in_(store_ids))
            .group_by(VectorStoreFile.store_id, VectorStoreFile.status)
        )
        for store_id, status, count in rows:
            counts[store_id][status] = int(count)
    return {store_id: FileCounts(**found) for store_id, found in counts.items()}


def usage_bytes(session: Session, store_ids: Sequence[str]) -> dict[str, int]:
    found = dict.fromkeys(store_ids, 0)
    if store_ids:
        rows = session.execute(
            select(
                VectorStoreFile.store_id, func.coalesce(func.sum(VectorStoreFile.usage_bytes), 0)
            )
            # Only indexed files: one being ingested holds its bytes for the quota only.
            .where(VectorStoreFile.store_id.in_(store_ids), VectorStoreFile.status == "completed")
            .group_by(VectorStoreFile.store_id)
        )
        found.update({store_id: int(total) for store_id, total in rows})
    return found


def longest_chunk(session: Session, caller: Caller, store_ids: Sequence[str]) -> int:
    """The largest chunk size (in tokens) any file of these stores was cut to, of the ones
    the caller may read (what the others hold is not theirs to learn, even as an amount
    reserved); 0 if none."""
    readable = [
        store_id
        for store_id in store_ids
        if (store := session.get(VectorStore, store_id)) is not None and can_read(store, caller)
    ]
    if not readable:
        return 0
    longest = session.scalar(
        select(func.max(VectorStoreFile.max_chunk_tokens)).where(
            VectorStoreFile.store_id.in_(readable)
        )
    )
    return int(longest or 0)


def user_bytes(session: Session, user_id: int) -> int:
    """The chunk text the user's stores hold or have reserved (files being ingested), for
    the quota."""
    total = session.scalar(
        select(func.coalesce(func.sum(VectorStoreFile.usage_bytes), 0)).where(
            VectorStoreFile.user_id == user_id
        )
    )
    return int(total or 0)


def reserve_bytes(
    session: Session, *, store_id: str, file_id: str, user_id: int, size: int, quota: int
) -> bool:
    """Hold ``size`` bytes of the owner's quota for a file being ingested, in its row's
    ``usage_bytes`` (what the quota counts, with every other file's), if the quota has room
    beside what the owner's other files hold; False if not, or if the file is no longer in
    progress. A file that leaves ``in_progress`` without completing gives its bytes back
    (``release``).

    Checked and held in one UPDATE, after locking the owner's row (on PostgreSQL): two
    ingestions at once cannot both take the last of the quota. On SQLite the one statement
    reads and writes under one lock."""
    session.execute(select(User.id).where(User.id == user_id).with_for_update())
    other = aliased(VectorStoreFile)
    others = (
        select(func.coalesce(func.sum(other.usage_bytes), 0))
        .where(
            other.user_id == user_id, ~((other.store_id == store_id) & (other.file_id == file_id))
        )
        .scalar_subquery()
    )
    held = session.execute(
        update(VectorStoreFile)
        .where(
            VectorStoreFile.store_id == store_id,
            VectorStoreFile.file_id == file_id,
            VectorStoreFile.status == "in_progress",
            others + size <= quota,
        )
        .values(usage_bytes=size)
    )
    return bool(held.rowcount)  # type: ignore[attr-defined]


def release(row: VectorStoreFile) -> None:
    """A file that stopped without completing holds no bytes of its owner's quota."""
    row.usage_bytes = 0


def touch(store: VectorStore, now: datetime) -> None:
    """The store was used: its expiry moves with its last activity."""
    store.last_active_at = now
    if store.expires_after_days is not None:
        store.expires_at = now + timedelta(days=store.expires_after_days)


def is_expired(store: VectorStore, now: datetime) -> bool:
    return store.expires_at is not None and store.expires_at <= now


def store_facts(session: Session, stores: Sequence[VectorStore], now: datetime) -> list[StoreFacts]:
    ids = [store.id for store in stores]
    counts, sizes = file_counts(session, ids), usage_bytes(session, ids)
    return [
        StoreFacts(
            id=store.id,
            name=store.name,
            created_at=store.created_at,
            last_active_at=store.last_active_at,
            metadata=dict(store.metadata_ or {}),
            usage_bytes=sizes[store.id],
            file_counts=counts[store.id],
            expires_after_days=store.expires_after_days,
            expires_at=store.expires_at,
            expired=is_expired(store, now),
            shared_groups=list(store.shared_groups or ()),
            shared_users=list(store.shared_users or ()),
            embedding_model=store.embedding_model,
        )
        for store in stores
    ]


def file_facts(row: VectorStoreFile) -> StoreFileFacts:
    return StoreFileFacts(
        file_id=row.file_id,
        store_id=row.store_id,
        created_at=row.created_at,
        status=row.status,
        stage=row.stage,
        last_error=row.last_error,
        usage_bytes=row.usage_bytes if row.status == "completed" else 0,
        attributes=dict(row.attributes or {}),
        max_chunk_tokens=row.max_chunk_tokens,
        chunk_overlap_tokens=row.chunk_overlap_tokens,
        pages=row.pages,
        chunks=row.chunks,
    )


@dataclass(frozen=True, slots=True)
class OwnerUsage:
    """What one user's knowledge bases hold, for administrators."""

    user_id: int
    username: str
    stores: int
    files: FileCounts
    usage_bytes: int
    last_active_at: datetime


def usage_by_owner(session: Session) -> list[OwnerUsage]:
    """The users with knowledge bases, those holding the most bytes first."""
    owners = session.execute(
        select(
            VectorStore.user_id,
            User.username,
            func.count(),
            func.max(VectorStore.last_active_at),
        )
        .join(User, User.id == VectorStore.user_id)
        .group_by(VectorStore.user_id, User.username)
    ).all()
    counts: dict[int, dict[str, int]] = {row[0]: {} for row in owners}
    sizes = dict.fromkeys(counts, 0)
    for user_id, status, count, size in session.execute(
        select(
            VectorStoreFile.user_id,
            VectorStoreFile.status,
            func.count(),
            func.coalesce(func.sum(VectorStoreFile.usage_bytes), 0),
        ).group_by(VectorStoreFile.user_id, VectorStoreFile.status)
    ):
        if user_id in counts:
            counts[user_id][status] = int(count)
            sizes[user_id] += int(size)
    found = [
        OwnerUsage(user_id, username, int(n), FileCounts(**counts[user_id]), sizes[user_id], last)
        for user_id, username, n, last in owners
    ]
    found.sort(key=lambda usage: (-usage.usage_bytes, usage.username))
    return found
