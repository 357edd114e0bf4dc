"""The request log: the latest requests one account (or every account) made, each with its
status, model, tokens and latency, and how each model's recent calls went.

Read from the per-request usage rows through their (user, time) and (time) indexes, newest
first and a page at a time, so a page costs the same however long the history is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from hepai_server.db.tables import ApiKey, UsageRecord, User


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    id: int
    created_at: datetime
    request_id: str
    username: str
    key_name: str | None
    model: str
    endpoint: str
    status_code: int
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    latency_ms: float
    stream: bool


def latest(
    session: Session,
    *,
    user_id: int | None,
    errors_only: bool = False,
    before_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
) -> tuple[list[LoggedRequest], bool]:
    """The newest requests (of one account, or every account's for None), optionally only
    those answered with an error; and whether there are older ones."""
    query = (
        select(UsageRecord, User.username, ApiKey.name)
        .outerjoin(User, User.id == UsageRecord.user_id)
        .outerjoin(ApiKey, ApiKey.id == UsageRecord.api_key_id)
        .order_by(UsageRecord.id.desc())
        .limit(limit + 1)
    )
    if user_id is not None:
        query = query.where(UsageRecord.user_id == user_id)
    if errors_only:
        query = query.where(UsageRecord.status_code >= 400)
    if before_id is not None:
        query = query.where(UsageRecord.id < before_id)
    if since is not None:
        query = query.where(UsageRecord.created_at >= since)
    if until is not None:
        query = query.where(UsageRecord.created_at < until)
    rows = session.execute(query).all()
    found = [
        LoggedRequest(
            id=row.id,
            created_at=row.created_at,
            request_id=row.request_id,
            username=username or "",
            key_name=key_name,
            model=row.model,
            endpoint=row.endpoint,
            status_code=row.status_code,
            error=row.error,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            total_tokens=row.total_tokens,
            latency_ms=row.latency_ms,
            stream=row.stream,
        )
        for row, username, key_name in rows[:limit]
    ]
    return found, len(rows) > limit


@dataclass(frozen=True, slots=True)
class KeyTotals:
    key_id: int | None
    name: str | None
    requests: int
    errors: int
    total_tokens: int


def per_key(session: Session, *, user_id: int, since: datetime, until: datetime) -> list[KeyTotals]:
    """One account's requests and tokens by API key (None: the portal's playground)."""
    query = (
        select(
            UsageRecord.api_key_id,
            func.count(),
            func.coalesce(func.sum(case((UsageRecord.status_code >= 400, 1), else_=0)), 0),
            func.coalesce(func.sum(UsageRecord.total_tokens), 0),
        )
        .where(
            UsageRecord.user_id == user_id,
            UsageRecord.created_at >= since,
            UsageRecord.created_at < until,
        )
        .group_by(UsageRecord.api_key_id)
    )
    totals = session.execute(query).all()
    ids = [key_id for key_id, *_ in totals if key_id is not None]
    named = select(ApiKey.id, ApiKey.name).where(ApiKey.id.in_(ids))
    names: dict[int, str] = dict(session.execute(named).all())
    rows = [
        KeyTotals(key_id, names.get(key_id) if key_id else None, int(n), int(e), int(t))
        for key_id, n, e, t in totals
    ]
    return sorted(rows, key=lambda row: (-row.total_tokens, -row.requests))


def recent_health(session: Session, *, since: datetime) -> dict[str, tuple[int, int]]:
    """For each model called since ``since``: its calls, and how many of them failed on the
    upstream's side (status 500 or more)."""
    query = (
        select(
            UsageRecord.model,
            func.count(),
            func.coalesce(func.sum(case((UsageRecord.status_code >= 500, 1), else_=0)), 0),
        )
        .where(UsageRecord.created_at >= since)
        .group_by(UsageRecord.model)
    )
    return {model: (int(calls), int(failed)) for model, calls, failed in session.execute(query)}


def health_of(calls: int, failed: int) -> str:
    """``idle`` (no recent calls), ``failing`` (all failed), ``degraded`` or ``ok``."""
    if calls == 0:
        return "idle"
    if failed == calls:
        return "failing"
    return "degraded" if failed else "ok"
