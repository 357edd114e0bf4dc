"""Finding accounts, groups and admin actions for the admin pages: search, paging, members."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from hepai_server.db.tables import AuditEvent, Group, User, user_groups

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a longer list."""

    items: Sequence[T]
    total: int
    number: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_users(session: Session, *, text: str, number: int, size: int) -> Page[User]:
    """Accounts whose username or e-mail contains ``text``, by username, one page of them."""
    query = select(User)
    if text:
        pattern = like(text.lower())
        query = query.where(
            or_(
                func.lower(User.username).like(pattern, escape="\\"),
                func.lower(func.coalesce(User.email, "")).like(pattern, escape="\\"),
            )
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    number = max(1, min(number, -(-total // size) or 1))
    users = session.scalars(
        query.order_by(User.username).offset((number - 1) * size).limit(size)
    ).all()
    return Page(users, total, number, size)


@dataclass(frozen=True, slots=True)
class GroupRow:
    name: str
    members: int


def groups_with_counts(session: Session) -> list[GroupRow]:
    query = (
        select(Group.name, func.count(user_groups.c.user_id))
        .outerjoin(user_groups, user_groups.c.group_id == Group.id)
        .group_by(Group.name)
        .order_by(Group.name)
    )
    return [GroupRow(name, int(count)) for name, count in session.execute(query)]


def members(session: Session, group: Group) -> Sequence[User]:
    query = (
        select(User)
        .join(user_groups, user_groups.c.user_id == User.id)
        .where(user_groups.c.group_id == group.id)
        .order_by(User.username)
    )
    return session.scalars(query).all()


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which admin actions to show: by whom, which kind, on what, in which span."""

    actor: str = ""
    action: str = ""
    target: str = ""
    since: datetime | None = None
    until: datetime | None = None


def audit_events(
    session: Session, chosen: AuditFilter, *, before_id: int | None, size: int
) -> tuple[Sequence[AuditEvent], bool]:
    """The newest events the filter lets through (older than ``before_id``), and whether
    there are more."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(size + 1)
    if chosen.actor:
        query = query.where(AuditEvent.actor == chosen.actor)
    if chosen.action:
        query = query.where(AuditEvent.action.like(like(chosen.action)[1:], escape="\\"))
    if chosen.target:
        query = query.where(AuditEvent.target.like(like(chosen.target), escape="\\"))
    if chosen.since is not None:
        query = query.where(AuditEvent.created_at >= chosen.since)
    if chosen.until is not None:
        query = query.where(AuditEvent.created_at < chosen.until)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    events = session.scalars(query).all()
    return events[:size], len(events) > size


def audit_actions(session: Session) -> list[str]:
    return list(session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)))
