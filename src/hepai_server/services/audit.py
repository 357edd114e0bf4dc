"""The audit log: what administrators did, by whom, to what, and when."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hepai_server.db.tables import AuditEvent


def record(
    session: Session,
    *,
    actor_id: int | None,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
    ip: str | None = None,
) -> AuditEvent:
    """Add an event in the caller's transaction, so it is kept exactly when the change is.
    ``detail`` says what changed and must never hold a secret."""
    event = AuditEvent(
        actor_id=actor_id,
        actor=actor,
        action=action,
        target=target[:256],
        detail=detail or {},
        ip=ip,
        created_at=datetime.now(UTC),
    )
    session.add(event)
    return event


def recent(
    session: Session, *, limit: int = 200, before_id: int | None = None
) -> Sequence[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    return session.scalars(query).all()
