"""Rate limits: requests per minute, tokens per minute and requests at once.

A limit is set for a key, a user, a group, or everyone, on every model or on one:

- ``key`` / ``user`` / ``group`` with an id: counted for that key, user or group (a group's
  members together);
- ``user`` with id 0: the default for every user without a limit of their own (each counted
  apart);
- ``model`` (id 0) with a model: that model for everyone together (protecting an upstream);
- any of these with a model: only calls to that model count.

The defaults of the settings (``HEPAI_SERVER_DEFAULT_RPM`` …) are a ``user`` limit with id 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hepai_server.db.governance import RateLimit
from hepai_server.errors import InvalidRequest, NotFound

SCOPES = ("key", "user", "group", "model")


@dataclass(frozen=True, slots=True)
class RateRule:
    scope: str
    subject_id: int
    #: "" for every model.
    model: str
    rpm: int | None
    tpm: int | None
    concurrency: int | None


def rule_of(limit: RateLimit) -> RateRule:
    return RateRule(
        scope=limit.scope,
        subject_id=limit.subject_id,
        model=limit.model,
        rpm=limit.rpm,
        tpm=limit.tpm,
        concurrency=limit.concurrency,
    )


def set_limit(
    session: Session,
    *,
    scope: str,
    subject_id: int,
    model: str,
    rpm: int | None,
    tpm: int | None,
    concurrency: int | None,
    now: datetime,
    by: str | None,
) -> RateLimit:
    """Set (replace) the limits of a subject on a model ("" for all)."""
    if scope not in SCOPES:
        raise InvalidRequest(f"a limit is for one of {', '.join(SCOPES)}", param="scope")
    if scope == "model" and (not model or subject_id):
        raise InvalidRequest("a model limit names the model and no subject", param="model")
    for name, value in (("rpm", rpm), ("tpm", tpm), ("concurrency", concurrency)):
        if value is not None and value < 0:
            raise InvalidRequest(f"'{name}' is not negative", param=name)
    if rpm is None and tpm is None and concurrency is None:
        raise InvalidRequest("set at least one of rpm, tpm and concurrency", param="rpm")
    limit = session.scalar(
        select(RateLimit).where(
            RateLimit.scope == scope, RateLimit.subject_id == subject_id, RateLimit.model == model
        )
    )
    if limit is None:
        limit = RateLimit(scope=scope, subject_id=subject_id, model=model)
        session.add(limit)
    limit.rpm, limit.tpm, limit.concurrency = rpm, tpm, concurrency
    limit.updated_at, limit.updated_by = now, by
    session.flush()
    return limit


def clear_limit(session: Session, *, scope: str, subject_id: int, model: str) -> None:
    result = session.execute(
        delete(RateLimit).where(
            RateLimit.scope == scope, RateLimit.subject_id == subject_id, RateLimit.model == model
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"no limit for {scope} {subject_id} on {model or 'every model'}")


def list_limits(session: Session) -> Sequence[RateLimit]:
    return session.scalars(
        select(RateLimit).order_by(RateLimit.scope, RateLimit.subject_id, RateLimit.model)
    ).all()
