"""Groups and their administrators: an experiment's or a department's lead, made the
administrator of its group by a platform admin, manages its members and gives them budgets and
rate limits within the group's own, without being a platform admin.

Joining a group binds a user to its budget and lets its lead limit them, so a lead does not add
people: they invite them (a notice), and the user joins by accepting. Platform admins add
directly.

A member's budget and rate limits are the member's own (scope ``user``): they bind every call the
member makes. So a group's administrator may set or clear them only where the platform has not:
never their own, and never one last set by anyone but an administrator of this group (a platform
admin, the CLI, another group's administrator). Otherwise a lead could lift the budget an admin
gave them, or a member's stricter one. What a group's lead set goes when the member leaves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hepai_server.db.governance import Budget, GroupAdmin, Notice, RateLimit
from hepai_server.db.tables import Group, User, user_groups
from hepai_server.errors import InvalidRequest, NotFound, PermissionDenied
from hepai_server.governance import budgets, limits
from hepai_server.services import accounts
from hepai_server.services.accounts import Caller
from hepai_server.services.directory import Page, like, paged


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


def find_members(
    session: Session, group: Group, *, text: str = "", number: int = 1, size: int = 50
) -> Page[User]:
    """One page of the group's members whose username contains ``text``, by username."""
    query = (
        select(User)
        .join(user_groups, user_groups.c.user_id == User.id)
        .where(user_groups.c.group_id == group.id)
        .order_by(User.username)
    )
    if text:
        query = query.where(func.lower(User.username).like(like(text.lower()), escape="\\"))
    return paged(session, query, number=number, size=size)


INVITATION = "group.invitation"


def add_member(session: Session, *, group: Group, username: str) -> User:
    user = accounts.get_user(session, username)
    if group not in user.groups:
        user.groups.append(group)
    session.flush()
    return user


def invite(session: Session, caller: Caller, *, group: Group, username: str) -> bool:
    """Add the user (a platform admin) or invite them (a group's lead); whether they are a
    member now."""
    if caller.is_admin:
        add_member(session, group=group, username=username)
        return True
    user = accounts.get_user(session, username)
    if group in user.groups:
        return True
    if invitation(session, user, group) is None:
        detail = {"group": group.name, "group_id": group.id, "by": caller.username}
        session.add(Notice(user_id=user.id, kind=INVITATION, detail=detail))
        session.flush()
    return False


def invitation(session: Session, user: User, group: Group) -> Notice | None:
    """The user's open invitation to the group, if any."""
    return next(
        (
            notice
            for notice in session.scalars(
                select(Notice).where(
                    Notice.user_id == user.id, Notice.kind == INVITATION, Notice.seen_at.is_(None)
                )
            )
            if notice.detail.get("group_id") == group.id
        ),
        None,
    )


def join(session: Session, caller: Caller, *, name: str, now: datetime) -> Group:
    """Accept an open invitation to the group: 404 without one."""
    group = session.scalar(select(Group).where(Group.name == name))
    user = accounts.get_user(session, caller.username)
    invited = invitation(session, user, group) if group is not None else None
    if group is None or invited is None:
        raise NotFound(f"no invitation to group {name!r}", param="group")
    invited.seen_at = now
    if group not in user.groups:
        user.groups.append(group)
    session.flush()
    return group


def remove_member(session: Session, *, group: Group, username: str) -> User:
    """Take the user out of the group, with the budget and limits its leads gave them."""
    user = member(session, group, username)
    user.groups.remove(group)
    session.execute(
        delete(GroupAdmin).where(GroupAdmin.group_id == group.id, GroupAdmin.user_id == user.id)
    )
    marker = set_by_lead_of(group)
    for row in (own_budget(session, user), own_limit(session, user)):
        if row is not None and row.updated_by is not None and row.updated_by.endswith(marker):
            session.delete(row)
    session.flush()
    return user


def set_by_lead_of(group: Group) -> str:
    """How a row a group's lead set names its setter (no username holds a space)."""
    return f" (lead of {group.name})"


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
        may_govern(session, caller, group, user, "budget", own_budget(session, user))
        ceiling = group_budget(session, group)
        if ceiling is None:
            raise PermissionDenied(
                f"group {group.name!r} has no budget of its own to share; ask an admin",
                param="budget",
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
        by=caller.username if caller.is_admin else caller.username + set_by_lead_of(group),
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
        may_govern(session, caller, group, user, "rate limits", own_limit(session, user))
        own = group_limit(session, group)
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
        by=caller.username if caller.is_admin else caller.username + set_by_lead_of(group),
    )


def clear_member_budget(session: Session, caller: Caller, *, group: Group, username: str) -> None:
    """Remove a member's own budget (the group's still counts their calls)."""
    user = member(session, group, username)
    if not caller.is_admin:
        may_govern(session, caller, group, user, "budget", own_budget(session, user))
    budgets.clear_budget(session, scope="user", subject_id=user.id)


def clear_member_limit(session: Session, caller: Caller, *, group: Group, username: str) -> None:
    """Remove a member's own rate limits on every model (the group's still count their calls)."""
    user = member(session, group, username)
    if not caller.is_admin:
        may_govern(session, caller, group, user, "rate limits", own_limit(session, user))
    limits.clear_limit(session, scope="user", subject_id=user.id, model="")


def may_govern(
    session: Session,
    caller: Caller,
    group: Group,
    user: User,
    what: str,
    current: Budget | RateLimit | None,
) -> None:
    """Refuse a group administrator's change to a member's own budget or limits that is not
    theirs to make: their own, or one the platform (or another group) set."""
    if user.id == caller.user_id:
        raise PermissionDenied(
            f"a group's administrator does not set their own {what}; ask an admin",
            param="username",
        )
    if current is None:
        return
    if not (current.updated_by or "").endswith(set_by_lead_of(group)):
        raise PermissionDenied(
            f"{user.username}'s {what} was set by an admin, not by {group.name!r}'s "
            "administrators; ask an admin to change it",
            param="username",
        )


def own_budget(session: Session, user: User) -> Budget | None:
    return session.scalar(
        select(Budget).where(Budget.scope == "user", Budget.subject_id == user.id)
    )


def own_limit(session: Session, user: User) -> RateLimit | None:
    """The member's own rate limits on every model (the ones a group's administrator sets)."""
    return session.scalar(
        select(RateLimit).where(
            RateLimit.scope == "user", RateLimit.subject_id == user.id, RateLimit.model == ""
        )
    )


def group_budget(session: Session, group: Group) -> Budget | None:
    return session.scalar(
        select(Budget).where(Budget.scope == "group", Budget.subject_id == group.id)
    )


def group_limit(session: Session, group: Group) -> RateLimit | None:
    """The group's own rate limits on every model: the ceiling of its members'."""
    return session.scalar(
        select(RateLimit).where(
            RateLimit.scope == "group", RateLimit.subject_id == group.id, RateLimit.model == ""
        )
    )


def member_counts(session: Session, group_ids: Sequence[int]) -> dict[int, int]:
    """How many members each of these groups has (none: absent)."""
    query = (
        select(user_groups.c.group_id, func.count())
        .where(user_groups.c.group_id.in_(group_ids))
        .group_by(user_groups.c.group_id)
    )
    return {group_id: int(count) for group_id, count in session.execute(query)}


def admin_names(session: Session, group_ids: Sequence[int]) -> dict[int, list[str]]:
    """The usernames of each of these groups' administrators."""
    query = (
        select(GroupAdmin.group_id, User.username)
        .join(User, User.id == GroupAdmin.user_id)
        .where(GroupAdmin.group_id.in_(group_ids))
        .order_by(User.username)
    )
    found: dict[int, list[str]] = {}
    for group_id, username in session.execute(query):
        found.setdefault(group_id, []).append(username)
    return found
