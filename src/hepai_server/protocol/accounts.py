"""The account payloads of the hepai client (wire spec §5): APIKeyInfo, UserInfo and friends.

The SDK builds its dataclasses with ``Cls(**json)``, so these carry exactly its keys. Secrets
appear in one place only: ``api_key`` of the APIKeyInfo answering the call that created it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hepai_server.errors import InvalidRequest

#: How the platform's two levels read in the SDK's level ladder.
SDK_LEVEL = {"user": "member", "admin": "admin"}


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """What the wire tells of an API key (never its secret)."""

    id: int
    prefix: str
    name: str
    user_id: int
    username: str
    allowed_models: Sequence[str] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class GroupFacts:
    id: int
    name: str
    description: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UserFacts:
    """What the wire tells of an account (never its password)."""

    id: int
    username: str
    email: str | None
    level: str
    disabled: bool
    groups: Sequence[GroupFacts]
    created_at: datetime


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def masked(key: KeyFacts) -> str:
    return f"{key.prefix}…"


def api_key_info(key: KeyFacts, *, secret: str | None = None) -> dict[str, Any]:
    """APIKeyInfo; ``api_key`` is the secret only when it was just created, else its prefix."""
    return {
        "id": str(key.id),
        "api_key": secret if secret is not None else masked(key),
        "alias": key.name,
        "user_id": str(key.user_id),
        "username": key.username,
        "expiration_time": _time(key.expires_at),
        "usage_description": None,
        "create_time": _time(key.created_at),
        "created_by": None,
        "update_time": _time(key.revoked_at or key.created_at),
        "updated_by": None,
        "allowed_models": "all"
        if key.allowed_models is None
        else {"models": list(key.allowed_models)},
        "remarks": None,
        "app_group": None,
        "del_flag": key.revoked_at is not None,
    }


def api_key_deleted(key: KeyFacts) -> dict[str, Any]:
    return {"id": str(key.id), "api_key": masked(key), "deleted": True}


def user_info(user: UserFacts) -> dict[str, Any]:
    """UserInfo; ``user_groups`` is null rather than [] (an empty list crashes the SDK)."""
    groups = [
        {
            "name": group.name,
            "id": str(group.id),
            "description": group.description,
            "create_time": _time(group.created_at),
            "created_by": None,
            "update_time": None,
            "updated_by": None,
            "remarks": None,
            "del_flag": False,
        }
        for group in user.groups
    ]
    return {
        "id": str(user.id),
        "username": user.username,
        "password": None,
        "user_level": SDK_LEVEL.get(user.level, "member"),
        "user_groups": groups or None,
        "phone": None,
        "auth_type": "local",
        "create_time": _time(user.created_at),
        "created_by": None,
        "update_time": None,
        "updated_by": None,
        "remarks": None,
        "del_flag": user.disabled,
        "umt_id": None,
        "email": user.email,
        "cluster_uid": None,
        "balance": 0.0,
    }


def user_deleted(user: UserFacts) -> dict[str, Any]:
    return {"id": str(user.id), "username": user.username, "deleted": True}


def allowed_models(value: Any) -> list[str] | None:
    """The SDK's ``allowed_models``: "all", a list of ids, or {"models": [...]}; None = all."""
    if value is None or value == "all":
        return None
    if isinstance(value, dict):
        value = value.get("models")
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise InvalidRequest(
        "'allowed_models' must be 'all', a list of model ids or {'models': [...]}",
        param="allowed_models",
    )


def level(value: Any) -> str:
    """The SDK's level names to the platform's two levels."""
    if value in (None, "public", "free", "member", "plus", "user"):
        return "user"
    if value == "admin":
        return "admin"
    raise InvalidRequest(
        f"user_level {value!r} is not offered here; use 'member' or 'admin'", param="user_level"
    )


def page(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """An H*ListPage: only the keys the SDK declares."""
    return {
        "object": "list",
        "data": rows,
        "first_id": rows[0]["id"] if rows else None,
        "last_id": rows[-1]["id"] if rows else None,
        "has_more": False,
        "total": len(rows),
    }
