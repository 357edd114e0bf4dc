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

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from hepai_server.db.tables import LoginFailure, User, WebSession

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


def end(session: Session, *, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id == token_hash(token)))


def end_all(session: Session, *, user_id: int) -> int:
    """End every session of a user (password changed, account disabled); how many ended."""
    result = session.execute(delete(WebSession).where(WebSession.user_id == user_id))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def purge_expired(session: Session, *, now: datetime, window: timedelta) -> None:
    """Forget ended sessions and sign-in failures older than the throttling window."""
    session.execute(delete(WebSession).where(WebSession.expires_at <= now))
    session.execute(delete(LoginFailure).where(LoginFailure.created_at <= now - window))


@dataclass(frozen=True, slots=True)
class Throttle:
    """How many sign-in attempts a username may have from one address, and an address at all,
    within ``window``. Counted per username *and* address, so a stranger's guessing from
    elsewhere never locks the owner (or an admin) out of their account."""

    per_username: int
    per_ip: int
    window: timedelta

    def attempt(self, session: Session, *, username: str, ip: str, now: datetime) -> bool:
        """Count a sign-in attempt before its password is checked; whether it may go on.

        The attempt is written first and counted after, with attempts from one address taken
        in turn (SQLite's write lock; a transaction-scoped advisory lock on PostgreSQL), so
        guesses sent at once get no more tries than the limit. A success then forgives them.
        """
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:ip))"), {"ip": ip})
        session.add(LoginFailure(username=username[:128], ip=ip[:64], created_at=now))
        session.flush()
        since = now - self.window
        recent = select(func.count()).where(LoginFailure.created_at > since)
        by_ip = session.scalar(recent.where(LoginFailure.ip == ip[:64])) or 0
        by_name = (
            session.scalar(
                recent.where(LoginFailure.username == username[:128], LoginFailure.ip == ip[:64])
            )
            or 0
        )
        return by_name <= self.per_username and by_ip <= self.per_ip

    def forgive(self, session: Session, *, username: str) -> None:
        """A successful sign-in clears the username's attempts; an address's attempts at
        other usernames still count."""
        session.execute(delete(LoginFailure).where(LoginFailure.username == username))
