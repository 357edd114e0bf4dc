"""Sign-in throttling: how many password guesses an account may have from one address, and an
address at all, within a window. The portal's sign-in and the API's password check count on
the same rows, so an account locked in one is locked in the other."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from hepai_server.db.tables import LoginFailure


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

    def purge_expired(self, session: Session, *, now: datetime) -> None:
        """Forget attempts older than the window."""
        session.execute(delete(LoginFailure).where(LoginFailure.created_at <= now - self.window))

    def forgive(self, session: Session, *, username: str) -> None:
        """A successful sign-in clears the username's attempts; an address's attempts at
        other usernames still count."""
        session.execute(delete(LoginFailure).where(LoginFailure.username == username))
