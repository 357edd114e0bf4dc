"""Groups and their administrators: an experiment's or a department's lead, made the
administrator of its group by a platform admin, manages its members and gives them budgets and
rate limits within the group's own, without being a platform admin.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hepai_server.db.governance import Budget, GroupAdmin, RateLimit
from hepai_server.db.tables import Group, User, user_groups
from hepai_server.errors import InvalidRequest, NotFound, PermissionDenied
from hepai_server.governance import budgets, limits
from hepai_server.services import accounts
from hepai_server.services.accounts import Caller


def get_group(session: Session, name: str) -> Group:
    group = session.scalar(select(Group).where(Group.name == name))
    if group is None:
        raise NotFound(f"no group {name!r}", param="group")
    return group


def set_admin(session: Session, *, group: Group, user: User, admin: bool) -> None:
    """Make ``user`` an administrator of ``group`` (a member too), or no longer one."""
    if admin:
        if session.get(GroupAdmin, (group.id, user.id)) is None:
            session.add(GroupAdmin(group_id=group.id, user_id=user.id))
        if group not in user.groups:
            user.groups.append(group)
    else:
        session.execute(
            delete(GroupAdmin).where(GroupAdmin.group_id == group.id, GroupAdmin.user_id == user.id)
        )
    session.flush()


def administered(session: Session, caller: Caller) -> Sequence[Group]:
    """The groups the caller may administer: every group for a platform admin."""
    if caller.is_admin:
        return session.scalars(select(Group).order_by(Group.name)).all()
    return session.scalars(
        select(Group)
        .join(GroupAdmin, GroupAdmin.group_id == Group.id)
        .where(GroupAdmin.user_id == caller.user_id)
        .order_by(Group.name)
    ).all()


def administer(session: Session, caller: Caller, name: str) -> Group:
    """The group named ``name``, if the caller administers it; else 404 (a group a caller may
    not administer is not shown to exist)."""
    group = session.scalar(select(Group).where(Group.name == name))
    if group is None or not (
        caller.is_admin or session.get(GroupAdmin, (group.id, caller.user_id)) is not None
    ):
        raise NotFound(f"no group {name!r} you administer", param="group")
    return group


def admins_of(session: Session, group: Group) -> Sequence[User]:
    return session.scalars(
        select(User)
        .join(GroupAdmin, GroupAdmin.user_id == User.id)
        .where(GroupAdmin.group_id == group.id)
        .order_by(User.username)
    ).all()


def members(session: Session, group: Group) -> Sequence[User]:
    return session.scalars(
        select(User)
        .join(user_groups, user_groups.c.user_id == User.id)
        .where(user_groups.c.group_id == group.id)
        .order_by(User.username)
    ).all()


def add_member(session: Session, *, group: Group, username: str) -> User:
    user = accounts.get_user(session, username)
    if group not in user.groups:
        user.groups.append(group)
    session.flush()
    return user


def remove_member(session: Session, *, group: Group, username: str) -> User:
    user = member(session, group, username)
    user.groups.remove(group)
    session.execute(
        delete(GroupAdmin).where(GroupAdmin.group_id == group.id, GroupAdmin.user_id == user.id)
    )
    session.flush()
    return user


def member(session: Session, group: Group, username: str) -> User:
    user = accounts.get_user(session, username)
    if group not in user.groups:
        raise NotFound(f"{username!r} is not a member of {group.name!r}", param="username")
    return user


def set_member_budget(
    session: Session,
    caller: Caller,
    *,
    group: Group,
    username: str,
    amount_nanos: int | None,
    tokens: int | None,
    period: str,
    warn_at: float,
    now: datetime,
) -> Budget:
    """A member's budget, set by the group's administrator within the group's own: no larger
    than the group's in either measure, and none where the group has no budget (platform
    admins are not bound)."""
    user = member(session, group, username)
    if not caller.is_admin:
        ceiling = session.scalar(
            select(Budget).where(Budget.scope == "group", Budget.subject_id == group.id)
        )
        if ceiling is None:
            raise PermissionDenied(
                f"group {group.name!r} has no budget of its own to share; ask an admin"
            )
        for given, own, what in (
            (amount_nanos, ceiling.amount_nanos, "amount"),
            (tokens, ceiling.tokens, "tokens"),
        ):
            if own is not None and (given is None or given > own):
                raise PermissionDenied(
                    f"a member's {what} is at most the group's ({own}); set it within it",
                    param=what,
                )
    return budgets.set_budget(
        session,
        scope="user",
        subject_id=user.id,
        amount_nanos=amount_nanos,
        tokens=tokens,
        period=period,
        warn_at=warn_at,
        now=now,
        by=caller.username,
    )


def set_member_limit(
    session: Session,
    caller: Caller,
    *,
    group: Group,
    username: str,
    rpm: int | None,
    tpm: int | None,
    concurrency: int | None,
    now: datetime,
) -> RateLimit:
    """A member's rate limits, set by the group's administrator within the group's own (each
    kind no higher than the group's; a kind the group does not limit is free)."""
    user = member(session, group, username)
    if not caller.is_admin:
        own = session.scalar(
            select(RateLimit).where(
                RateLimit.scope == "group", RateLimit.subject_id == group.id, RateLimit.model == ""
            )
        )
        for given, ceiling, what in (
            (rpm, own.rpm if own else None, "rpm"),
            (tpm, own.tpm if own else None, "tpm"),
            (concurrency, own.concurrency if own else None, "concurrency"),
        ):
            if ceiling is not None and given is not None and given > ceiling:
                raise PermissionDenied(
                    f"a member's {what} is at most the group's ({ceiling})", param=what
                )
    if rpm is None and tpm is None and concurrency is None:
        raise InvalidRequest("set at least one of rpm, tpm and concurrency", param="rpm")
    return limits.set_limit(
        session,
        scope="user",
        subject_id=user.id,
        model="",
        rpm=rpm,
        tpm=tpm,
        concurrency=concurrency,
        now=now,
        by=caller.username,
    )
