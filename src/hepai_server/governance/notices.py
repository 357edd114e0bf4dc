"""Notices: what the portal shows a user until they dismiss it (a budget's warning or its
exhaustion, raised once a period by the budget alerts)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hepai_server.db.governance import Notice
from hepai_server.errors import NotFound


def unseen(session: Session, *, user_id: int, limit: int = 5) -> Sequence[Notice]:
    """The user's notices not yet dismissed, newest first."""
    return session.scalars(
        select(Notice)
        .where(Notice.user_id == user_id, Notice.seen_at.is_(None))
        .order_by(Notice.created_at.desc(), Notice.id.desc())
        .limit(limit)
    ).all()


def recent(session: Session, *, user_id: int, limit: int = 10) -> Sequence[Notice]:
    """The user's latest notices, dismissed or not, newest first."""
    return session.scalars(
        select(Notice)
        .where(Notice.user_id == user_id)
        .order_by(Notice.created_at.desc(), Notice.id.desc())
        .limit(limit)
    ).all()


def dismiss(session: Session, *, user_id: int, notice_id: int | None, now: datetime) -> int:
    """Mark one of the user's notices seen (or, with no id, all of them); how many were.
    Another user's notice is not found."""
    query = update(Notice).where(Notice.user_id == user_id, Notice.seen_at.is_(None))
    if notice_id is not None:
        notice = session.get(Notice, notice_id)
        if notice is None or notice.user_id != user_id:
            raise NotFound("no such notice")
        query = query.where(Notice.id == notice_id)
    result = session.execute(query.values(seen_at=now))
    return int(result.rowcount)  # type: ignore[attr-defined]
