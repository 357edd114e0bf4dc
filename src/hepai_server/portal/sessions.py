"""Web sessions and sign-in throttling: who a browser is, kept server-side so it can be ended.

The cookie holds a random token; the database holds only its SHA-256, so a leaked database
opens no browser session. A session ends at sign-out, on a password change (every session of
the user), when its account is disabled, after ``portal_session_idle_hours`` without a request,
and ``portal_session_days`` after sign-in whatever happens.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from hepai_server.db.tables import User, WebSession

#: A session's last use is written at most this often, not on every page.
TOUCH_EVERY = timedelta(minutes=1)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True, slots=True)
class Lifetime:
    idle: timedelta
    absolute: timedelta


def start(
    session: Session,
    *,
    user: User,
    now: datetime,
    lifetime: Lifetime,
    ip: str | None,
    user_agent: str | None,
) -> tuple[str, WebSession]:
    """A new session for ``user``; the token goes into the cookie and nowhere else."""
    token = secrets.token_urlsafe(32)
    web = WebSession(
        id=token_hash(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        ip=ip,
        user_agent=(user_agent or "")[:256] or None,
        created_at=now,
        last_seen_at=now,
        expires_at=now + lifetime.absolute,
    )
    session.add(web)
    session.flush()
    return token, web


def resolve(
    session: Session, *, token: str, now: datetime, lifetime: Lifetime
) -> WebSession | None:
    """The live session behind a cookie's token, or None (unknown, expired, idle too long, or
    its account disabled)."""
    web = session.get(WebSession, token_hash(token))
    if web is None:
        return None
    if web.expires_at <= now or web.last_seen_at + lifetime.idle <= now or web.user.disabled:
        session.delete(web)
        return None
    if now - web.last_seen_at >= TOUCH_EVERY:
        web.last_seen_at = now
    return web


def leave_flash(session: Session, *, session_id: str, sealed: str) -> None:
    """Keep a sealed notice for the session's next page (``portal.flash``)."""
    session.execute(update(WebSession).where(WebSession.id == session_id).values(flash=sealed))


def end(session: Session, *, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id == token_hash(token)))


def end_all(session: Session, *, user_id: int) -> int:
    """End every session of a user (password changed, account disabled); how many ended."""
    result = session.execute(delete(WebSession).where(WebSession.user_id == user_id))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def purge_expired(session: Session, *, now: datetime) -> None:
    """Forget ended sessions."""
    session.execute(delete(WebSession).where(WebSession.expires_at <= now))
