"""Users, groups and API keys: the account operations the CLI and the API share.

Functions take an open Session and leave committing to the caller, who must also bump the
process-shared generation (``invalidation.Generation``) after changing anything the gateway caches:
a key's revocation, a user's level, groups or status.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from hepai_server.db.tables import ApiKey, Group, User
from hepai_server.errors import Conflict, InvalidRequest, NotFound
from hepai_server.protocol import accounts as wire
from hepai_server.security import credentials

log = logging.getLogger(__name__)

LEVELS = ("user", "admin")
#: Key scopes: an inference key calls models, tools and files; a full key also manages
#: accounts and keys and registers workers.
INFERENCE, FULL = "inference", "full"
SCOPES = (INFERENCE, FULL)
MIN_PASSWORD = 8
#: What user and group names may be: what the forms, the CLI and the API accept.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: an API key resolved to its user, as the gateway caches it."""

    key_id: int
    user_id: int
    username: str
    email: str | None
    is_admin: bool
    groups: frozenset[str]
    #: Model ids the key is limited to, or None for every model the user may call.
    allowed_models: frozenset[str] | None
    #: Epoch seconds after which the key stops working, or None.
    expires_at: float | None
    #: INFERENCE or FULL (a portal session acts with FULL).
    scope: str = FULL


def create_user(
    session: Session,
    *,
    username: str,
    password: str | None,
    level: str = "user",
    groups: Iterable[str] = (),
    email: str | None = None,
) -> User:
    if not NAME.match(username):
        raise InvalidRequest(
            "usernames are 1-128 letters, digits and _.@+- starting with a letter or digit",
            param="username",
        )
    if level not in LEVELS:
        raise InvalidRequest(f"level must be one of {', '.join(LEVELS)}", param="level")
    if password is not None and len(password) < MIN_PASSWORD:
        raise InvalidRequest(f"a password has at least {MIN_PASSWORD} characters", param="password")
    if email is not None and len(email) > 256:
        raise InvalidRequest("an e-mail address has at most 256 characters", param="email")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists", param="username")
    user = User(
        username=username,
        email=email,
        level=level,
        password_hash=credentials.hash_password(password) if password else None,
        groups=[ensure_group(session, name) for name in dict.fromkeys(groups)],
    )
    session.add(user)
    session.flush()
    return user


def ensure_group(session: Session, name: str) -> Group:
    if not NAME.match(name):
        raise InvalidRequest(f"invalid group name {name!r}", param="group")
    group = session.scalar(select(Group).where(Group.name == name))
    if group is None:
        group = Group(name=name)
        session.add(group)
        session.flush()
    return group


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username!r}", param="username")
    return user


def get_user_by_id(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user with id {user_id}", param="user_id")
    return user


def find_user_by_email(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        user = session.scalar(select(User).where(User.username == email))
    if user is None:
        raise NotFound(f"no user {email!r}", param="username")
    return user


@functools.cache
def dummy_hash() -> str:
    """A hash to verify against when there is no user, made on first use: Argon2 takes 64 MiB
    and a tenth of a second, which no process should pay at import."""
    return credentials.hash_password("not-a-password")


def check_password(session: Session, *, username: str, password: str) -> User | None:
    """The active user with this username and password, or None (same answer for either
    mistake, so a caller cannot tell which one was wrong)."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None or user.disabled or user.password_hash is None:
        credentials.verify_password(dummy_hash(), password)  # spend the same time either way
        return None
    return user if credentials.verify_password(user.password_hash, password) else None


def disable_user(session: Session, *, user: User) -> User:
    """Disable an account: its keys stop working (bump the generation after committing)."""
    user.disabled = True
    return user


def enable_user(session: Session, *, user: User) -> User:
    user.disabled = False
    return user


def set_password(session: Session, *, user: User, password: str) -> User:
    """Replace the password; the caller ends the user's other web sessions."""
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest(f"a password has at least {MIN_PASSWORD} characters", param="password")
    user.password_hash = credentials.hash_password(password)
    return user


def set_level(session: Session, *, user: User, level: str) -> User:
    if level not in LEVELS:
        raise InvalidRequest(f"level must be one of {', '.join(LEVELS)}", param="level")
    user.level = level
    return user


def set_groups(session: Session, *, user: User, groups: Iterable[str]) -> User:
    user.groups = [ensure_group(session, name) for name in dict.fromkeys(groups)]
    return user


def account_for_identity(
    session: Session,
    *,
    subject: str,
    username: str,
    email: str | None,
    groups: Iterable[str],
    admin_groups: Iterable[str],
) -> User | None:
    """The account of a single sign-on identity, made on its first sign-in; None if disabled.

    Accounts are matched by the provider's subject only, never by a username or e-mail an
    existing local account happens to share (that would hand the local account over). On every
    sign-in the account's groups become the provider's; with ``admin_groups`` set, membership
    of one of them also decides the admin level.
    """
    given = list(dict.fromkeys(groups))
    wanted = [name for name in given if NAME.match(name)]
    if dropped := [name for name in given if not NAME.match(name)]:
        log.warning("groups %s of %s are not valid group names; left out", dropped, subject)
    admin_groups = set(admin_groups)
    user = session.scalar(select(User).where(User.oidc_subject == subject))
    if user is None:
        user = User(
            username=free_username(session, username or email or subject),
            email=email,
            level="user",
            password_hash=None,
            oidc_subject=subject,
        )
        session.add(user)
    elif user.disabled:
        return None
    if email:
        user.email = email
    user.groups = [ensure_group(session, name) for name in wanted]
    if admin_groups:
        # Decided on the provider's own names, valid group names here or not.
        user.level = "admin" if admin_groups.intersection(given) else "user"
    session.flush()
    return user


def free_username(session: Session, wanted: str) -> str:
    """``wanted`` made a valid username no account has yet (alice, alice-2, …)."""
    base = re.sub(r"[^A-Za-z0-9_.@+-]", "", wanted).lstrip("_.@+-")[:120] or "sso-user"
    candidate, n = base, 1
    while session.scalar(select(User.id).where(User.username == candidate)) is not None:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def list_groups(session: Session) -> Sequence[Group]:
    return session.scalars(select(Group).order_by(Group.name)).all()


def list_users(session: Session) -> Sequence[User]:
    return session.scalars(select(User).order_by(User.id)).all()


def create_api_key(
    session: Session,
    *,
    user: User,
    name: str = "default",
    expires_in: timedelta | None = None,
    allowed_models: Iterable[str] | None = None,
    scope: str = FULL,
) -> tuple[ApiKey, str]:
    """Make a key; the secret is returned once and only its hash is stored."""
    if scope not in SCOPES:
        raise InvalidRequest(f"a key's scope is one of {', '.join(SCOPES)}", param="scope")
    secret = credentials.new_api_key()
    key = ApiKey(
        user_id=user.id,
        name=name,
        key_hash=credentials.hash_api_key(secret),
        prefix=credentials.shown_prefix(secret),
        allowed_models=sorted(set(allowed_models)) if allowed_models is not None else None,
        expires_at=datetime.now(UTC) + expires_in if expires_in is not None else None,
        scope=scope,
    )
    session.add(key)
    session.flush()
    return key, secret


def list_api_keys(session: Session, *, user: User | None = None) -> Sequence[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.id)
    if user is not None:
        query = query.where(ApiKey.user_id == user.id)
    return session.scalars(query).all()


def revoke_api_key(session: Session, *, key_id: int) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"no API key with id {key_id}", param="key_id")
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
    return key


def find_caller(session: Session, key_hash: str) -> Caller | None:
    """The caller behind a key hash, or None if the key is unknown, revoked or its user disabled."""
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
    if key is None or key.revoked_at is not None or key.user.disabled:
        return None
    return caller_of(key.user, key)


def caller_of(user: User, key: ApiKey | None = None) -> Caller:
    """The user as the gateway judges callers: through ``key`` (its limits and scope), or as
    the user themselves (every model they may use, full scope)."""
    return Caller(
        key_id=key.id if key is not None else 0,
        user_id=user.id,
        username=user.username,
        email=user.email,
        is_admin=user.is_admin,
        groups=frozenset(group.name for group in user.groups),
        allowed_models=frozenset(key.allowed_models)
        if key is not None and key.allowed_models is not None
        else None,
        expires_at=key.expires_at.timestamp()
        if key is not None and key.expires_at is not None
        else None,
        scope=key.scope if key is not None else FULL,
    )


def key_facts(key: ApiKey) -> wire.KeyFacts:
    """A key row as the account API tells of it."""
    return wire.KeyFacts(
        id=key.id,
        prefix=key.prefix,
        name=key.name,
        user_id=key.user_id,
        username=key.user.username,
        allowed_models=key.allowed_models,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
    )


def user_facts(user: User) -> wire.UserFacts:
    """A user row as the account API tells of it."""
    return wire.UserFacts(
        id=user.id,
        username=user.username,
        email=user.email,
        level=user.level,
        disabled=user.disabled,
        groups=[
            wire.GroupFacts(
                id=group.id,
                name=group.name,
                description=group.description,
                created_at=group.created_at,
            )
            for group in user.groups
        ],
        created_at=user.created_at,
    )
