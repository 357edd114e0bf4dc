"""Whom a budget or a rate limit is for, by name: a user, a group or a key as people name them
(``alice``, ``cms``, key ``42``), turned into the ids the tables keep, and back into names."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from hepai_server.db.tables import ApiKey, Group, User
from hepai_server.errors import InvalidRequest
from hepai_server.services.directory import like

#: Whom a budget may be for; a rate limit may also be for every user or a model.
BUDGET_SCOPES = ("user", "group", "key")
LIMIT_SCOPES = ("user", "group", "key", "everyone", "model")


@dataclass(frozen=True, slots=True)
class Subject:
    """A budget's or a limit's owner as a page shows it."""

    scope: str
    subject_id: int
    #: The user's or group's name, a key's ``owner/name``; "" for every user or a model.
    name: str
    #: The user a key belongs to (for a link to them), or the user itself.
    user_id: int | None = None


def resolve(session: Session, scope: str, name: str) -> int:
    """The id of the user, group or key (by id) called ``name``; refused when there is none."""
    name = name.strip()
    found: int | None = None
    if scope == "user":
        found = session.scalar(select(User.id).where(User.username == name))
    elif scope == "group":
        found = session.scalar(select(Group.id).where(Group.name == name))
    elif scope == "key":
        number = name.removeprefix("#")
        if number.isdigit() and len(number) < 12:
            found = session.scalar(select(ApiKey.id).where(ApiKey.id == int(number)))
    else:
        raise InvalidRequest(f"a budget is for one of {', '.join(BUDGET_SCOPES)}", param="scope")
    if found is None:
        raise InvalidRequest(f"no {scope} {name!r}", param="subject")
    return found


def describe(session: Session, pairs: Iterable[tuple[str, int]]) -> dict[tuple[str, int], Subject]:
    """Each (scope, id) by name, in three queries whatever their number."""
    wanted: dict[str, set[int]] = {"user": set(), "group": set(), "key": set()}
    for scope, subject_id in pairs:
        if scope in wanted and subject_id:
            wanted[scope].add(subject_id)
    found: dict[tuple[str, int], Subject] = {}
    if wanted["user"]:
        query = select(User.id, User.username).where(User.id.in_(wanted["user"]))
        for user_id, username in session.execute(query):
            found["user", user_id] = Subject("user", user_id, username, user_id)
    if wanted["group"]:
        named = select(Group.id, Group.name).where(Group.id.in_(wanted["group"]))
        for group_id, group_name in session.execute(named):
            found["group", group_id] = Subject("group", group_id, group_name)
    if wanted["key"]:
        keys = (
            select(ApiKey.id, ApiKey.name, User.id, User.username)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.id.in_(wanted["key"]))
        )
        for key_id, key_name, owner_id, owner in session.execute(keys):
            found["key", key_id] = Subject("key", key_id, f"{owner}/{key_name}", owner_id)
    return found


def named_like(
    scope: InstrumentedAttribute[str], subject_id: InstrumentedAttribute[int], text: str
) -> ColumnElement[bool]:
    """Rows (of budgets or limits) whose subject's name contains ``text``: a user's name, a
    group's, or a key's name or its owner's."""
    pattern = like(text.lower())
    users = select(User.id).where(func.lower(User.username).like(pattern, escape="\\"))
    groups = select(Group.id).where(func.lower(Group.name).like(pattern, escape="\\"))
    keys = (
        select(ApiKey.id)
        .join(User, User.id == ApiKey.user_id)
        .where(
            or_(
                func.lower(ApiKey.name).like(pattern, escape="\\"),
                func.lower(User.username).like(pattern, escape="\\"),
            )
        )
    )
    return or_(
        and_(scope == "user", subject_id.in_(users)),
        and_(scope == "group", subject_id.in_(groups)),
        and_(scope == "key", subject_id.in_(keys)),
    )
