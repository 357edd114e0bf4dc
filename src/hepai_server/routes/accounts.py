"""The account routes of the hepai client: /key/* and /user/* (wire spec §5).

Everyone manages their own keys; admins manage everyone's keys and all users, and what they do
to other accounts goes to the audit log. A change that affects callers (a deleted key, a
deleted user) bumps the shared generation, so every process on this machine refuses the key
from its next request.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from hepai_server.db.tables import ApiKey
from hepai_server.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
)
from hepai_server.gateway import registry
from hepai_server.gateway.runtime import Gateway
from hepai_server.protocol import accounts as wire
from hepai_server.routes.http import authenticate, json_body, json_response
from hepai_server.security.credentials import looks_like_api_key
from hepai_server.services import accounts, audit
from hepai_server.services.accounts import Caller

MAX_VALID_DAYS = 3650


def record(
    session: Session, caller: Caller, request: Request, action: str, target: str, **detail: Any
) -> None:
    """An admin's action through the API, in the same audit log as the portal's."""
    audit.record(
        session,
        actor_id=caller.user_id,
        actor=caller.username,
        action=action,
        target=target,
        detail={**detail, "via": "api"},
        ip=request.client.host if request.client else None,
    )


def require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise PermissionDenied("only an admin may do this")


def _id(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"'{name}' must be an id", param=name) from None


async def create_api_key(request: Request) -> Response:
    gateway, caller = await authenticate(request, full=True)
    body = await json_body(request)
    user_id = _id(body, "user_id")
    if body.get("umt_id") is not None:
        raise InvalidRequest("umt_id is not known to this platform; use user_id", param="umt_id")
    if user_id is not None and user_id != caller.user_id:
        require_admin(caller)
    days = body.get("valid_time", 30)
    if days is not None and (
        isinstance(days, bool)
        or not isinstance(days, int | float)
        or not 0 < days <= MAX_VALID_DAYS
    ):
        raise InvalidRequest(
            f"'valid_time' is days, from 1 to {MAX_VALID_DAYS}", param="valid_time"
        )
    name = body.get("key_name") or "default"
    if not isinstance(name, str) or len(name) > 128:
        raise InvalidRequest(
            "'key_name' must be a string of at most 128 characters", param="key_name"
        )
    allowed = wire.allowed_models(body.get("allowed_models"))
    scope = body.get("scope", accounts.INFERENCE)
    if scope not in accounts.SCOPES:
        raise InvalidRequest(f"'scope' is one of {', '.join(accounts.SCOPES)}", param="scope")
    if allowed is not None:
        owner_caller = await gateway.transact(
            lambda s: accounts.caller_of(accounts.get_user_by_id(s, user_id or caller.user_id))
        )
        if refused := await uncallable(gateway, owner_caller, allowed):
            raise PermissionDenied(
                "the key's owner may not call " + ", ".join(repr(m) for m in refused),
                param="allowed_models",
            )

    def work(session: Session) -> dict[str, Any]:
        owner = accounts.get_user_by_id(session, user_id or caller.user_id)
        key, secret = accounts.create_api_key(
            session,
            user=owner,
            name=name,
            expires_in=timedelta(days=days) if days is not None else None,
            allowed_models=allowed,
            scope=scope,
        )
        if owner.id != caller.user_id:
            record(session, caller, request, "key.create_for_user", owner.username, name=name)
        return wire.api_key_info(accounts.key_facts(key), secret=secret)

    return json_response(await gateway.transact(work))


async def list_api_keys(request: Request) -> Response:
    gateway, caller = await authenticate(request, full=True)

    def work(session: Session) -> list[dict[str, Any]]:
        owner = None if caller.is_admin else accounts.get_user_by_id(session, caller.user_id)
        return [
            wire.api_key_info(accounts.key_facts(key))
            for key in accounts.list_api_keys(session, user=owner)
        ]

    return json_response(wire.page(await gateway.transact(work)))


async def delete_api_key(request: Request) -> Response:
    gateway, caller = await authenticate(request, full=True)
    key_id = _id(await json_body(request), "api_key_id")
    if key_id is None:
        raise InvalidRequest("'api_key_id' is required", param="api_key_id")

    def work(session: Session) -> dict[str, Any]:
        key = session.get(ApiKey, key_id)
        if key is None or (key.user_id != caller.user_id and not caller.is_admin):
            raise NotFound(f"no API key with id {key_id}", param="api_key_id")
        if key.user_id != caller.user_id:
            record(
                session, caller, request, "key.revoke_for_user", key.user.username, key=key.prefix
            )
        return wire.api_key_deleted(
            accounts.key_facts(accounts.revoke_api_key(session, key_id=key_id))
        )

    deleted = await gateway.transact(work)
    await gateway.callers_changed()
    return json_response(deleted)


async def verify_api_key(request: Request) -> Response:
    """Whether a key works, as plain text: the SDK fails to parse any JSON object here."""
    gateway, _caller = await authenticate(request, full=True)
    key = (await json_body(request)).get("api_key")
    if not isinstance(key, str) or not looks_like_api_key(key):
        raise AuthenticationFailed("the API key is not valid")
    await gateway.auth.authenticate(key)
    return PlainTextResponse("valid")


async def fetch_api_key(request: Request) -> Response:
    """A new key for a user, by e-mail or username (admins only). Keys are stored hashed, so
    an existing secret can never be fetched; the user gets a fresh one instead."""
    gateway, caller = await authenticate(request, full=True)
    require_admin(caller)
    username = (await json_body(request)).get("username")
    if not isinstance(username, str) or not username:
        raise InvalidRequest("'username' is required", param="username")

    def work(session: Session) -> dict[str, Any]:
        user = accounts.find_user_by_email(session, username)
        key, secret = accounts.create_api_key(
            session, user=user, name=f"fetched-by-{caller.username}"[:128]
        )
        record(session, caller, request, "key.fetch_for_user", user.username)
        return wire.api_key_info(accounts.key_facts(key), secret=secret)

    return json_response(await gateway.transact(work))


async def list_users(request: Request) -> Response:
    gateway, caller = await authenticate(request, full=True)
    require_admin(caller)
    users = await gateway.transact(
        lambda s: [wire.user_info(accounts.user_facts(user)) for user in accounts.list_users(s)]
    )
    return json_response(wire.page(users))


async def create_user(request: Request) -> Response:
    gateway, caller = await authenticate(request, full=True)
    require_admin(caller)
    body = await json_body(request)
    username, password, email = body.get("username"), body.get("password"), body.get("email")
    if not isinstance(username, str):
        raise InvalidRequest("'username' is required", param="username")
    if password is not None and not isinstance(password, str):
        raise InvalidRequest("'password' must be a string", param="password")
    groups = [g["name"] if isinstance(g, dict) else g for g in body.get("user_groups") or []]
    if not all(isinstance(g, str) for g in groups):
        raise InvalidRequest("'user_groups' must be group names", param="user_groups")

    def work(session: Session) -> dict[str, Any]:
        user = accounts.create_user(
            session,
            username=username,
            password=password,
            level=wire.level(body.get("user_level")),
            groups=groups,
            email=email if isinstance(email, str) else None,
        )
        record(session, caller, request, "user.create", user.username, level=user.level)
        return wire.user_info(accounts.user_facts(user))

    return json_response(await gateway.transact(work))


async def delete_user(request: Request) -> Response:
    gateway, caller = await authenticate(request, full=True)
    require_admin(caller)
    user_id = _id(await json_body(request), "user_id")
    if user_id is None:
        raise InvalidRequest("'user_id' is required", param="user_id")
    if user_id == caller.user_id:
        raise InvalidRequest("an admin cannot delete their own account", param="user_id")

    def work(session: Session) -> dict[str, Any]:
        user = accounts.get_user_by_id(session, user_id)
        record(session, caller, request, "user.disable", user.username)
        return wire.user_deleted(accounts.user_facts(accounts.disable_user(session, user=user)))

    deleted = await gateway.transact(work)
    await gateway.callers_changed()
    return json_response(deleted)


async def auth_user(request: Request) -> Response:
    """Check a username and password: admins for anyone, others for themselves. Guesses are
    counted with the portal's sign-ins, per account and address: an account locked in one is
    locked in the other."""
    gateway, caller = await authenticate(request, full=True)
    body = await json_body(request)
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise InvalidRequest("'username' and 'password' are required")
    if username != caller.username:
        require_admin(caller)
    ip = request.client.host if request.client else "unknown"
    now = datetime.now(UTC)
    throttle = gateway.throttle
    if not await gateway.transact(
        lambda s: throttle.attempt(s, username=username[:128], ip=ip, now=now)
    ):
        raise RateLimited(
            "too many failed password checks for this account from this address; "
            f"wait {int(throttle.window.total_seconds() // 60)} minutes"
        )
    user = await gateway.transact(
        lambda s: accounts.check_password(s, username=username, password=password)
    )
    if user is None:
        raise AuthenticationFailed("wrong username or password")
    await gateway.transact(lambda s: throttle.forgive(s, username=username))
    return json_response(wire.user_info(accounts.user_facts(user)))


async def uncallable(gateway: Gateway, owner: Caller, models: list[str]) -> list[str]:
    """The models of ``models`` that ``owner`` may not call (or that do not exist)."""
    wanted = list(dict.fromkeys(models))
    catalog = gateway.catalog
    refused = {m for m in wanted if m in catalog.ids() and not catalog.resolve_or_none(m, owner)}

    def workers_refused(session: Session) -> set[str]:
        # Permitted even while none of its workers is live: routes_for answers [] then.
        return {
            m
            for m in wanted
            if m not in catalog.ids()
            and registry.routes_for(session, caller=owner, model_name=m, now=0.0, expiry=0.0)
            is None
        }

    refused |= await gateway.transact(workers_refused)
    return [m for m in wanted if m in refused]
