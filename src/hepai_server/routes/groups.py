"""The group administrators' API: the groups the caller administers, their members, and the
members' budgets and rate limits within the group's own (keys of full access only)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.errors import InvalidRequest
from hepai_server.governance import budgets, groups
from hepai_server.governance.prices import format_money, parse_amount
from hepai_server.routes.http import authenticate, json_body, json_response
from hepai_server.services import audit
from hepai_server.services.usage_report import UsageFilter, report


async def list_groups(request: Request) -> Response:
    gateway, caller = await authenticate(request, full=True)
    now = datetime.now(UTC)
    zone = gateway.settings.budget_zone

    def work(session: Session) -> list[dict[str, Any]]:
        shown = []
        for group in groups.administered(session, caller):
            rule = next(
                (
                    b
                    for b in gateway.limiter.rules.budgets()
                    if (b.scope, b.subject_id) == ("group", group.id)
                ),
                None,
            )
            budget = None
            if rule is not None:
                start, _end = rule.window(now, zone)
                money, tokens = budgets.spent(session, rule.id, start)
                budget = {
                    "period": rule.period,
                    "amount": None
                    if rule.amount_nanos is None
                    else format_money(rule.amount_nanos),
                    "spent": format_money(money),
                    "tokens": rule.tokens,
                    "tokens_spent": tokens,
                }
            shown.append(
                {
                    "name": group.name,
                    "members": [user.username for user in groups.members(session, group)],
                    "admins": [user.username for user in groups.admins_of(session, group)],
                    "budget": budget,
                }
            )
        return shown

    return json_response({"object": "list", "data": await gateway.transact(work)})


async def change_member(request: Request) -> Response:
    """Add (POST) or remove (DELETE) a member: ``/groups/{group}/members/{username}``. A
    group's lead invites rather than adds: the user joins by accepting (``POST
    /groups/{group}/join``)."""
    gateway, caller = await authenticate(request, full=True)
    name, username = request.path_params["group"], request.path_params["username"]
    adding = request.method == "POST"

    def work(session: Session) -> bool:
        group = groups.administer(session, caller, name)
        if adding:
            member_now = groups.invite(session, caller, group=group, username=username)
        else:
            groups.remove_member(session, group=group, username=username)
            member_now = False
        action = "group.remove_member"
        if adding:
            action = "group.add_member" if member_now else "group.invite_member"
        audit.record(
            session,
            actor_id=caller.user_id,
            actor=caller.username,
            action=action,
            target=f"{name}:{username}",
            detail={"via": "api"},
        )
        return member_now

    member_now = await gateway.transact(work)
    await gateway.callers_changed()
    await gateway.catalog_changed()
    return json_response(
        {
            "group": name,
            "member": username,
            "member_now": member_now,
            "invited": adding and not member_now,
        }
    )


async def join_group(request: Request) -> Response:
    """``POST /groups/{group}/join``: accept an invitation to the group."""
    gateway, caller = await authenticate(request, full=True)
    name = request.path_params["group"]

    def work(session: Session) -> None:
        groups.join(session, caller, name=name, now=datetime.now(UTC))
        audit.record(
            session,
            actor_id=caller.user_id,
            actor=caller.username,
            action="group.join",
            target=name,
            detail={"via": "api"},
        )

    await gateway.transact(work)
    await gateway.callers_changed()
    return json_response({"group": name, "member": caller.username, "member_now": True})


async def member_budget(request: Request) -> Response:
    """``PUT /groups/{group}/members/{username}/budget`` {amount, tokens, period, warn_at}."""
    gateway, caller = await authenticate(request, full=True)
    name, username = request.path_params["group"], request.path_params["username"]
    body = await json_body(request)
    amount = _amount(body.get("amount"))
    tokens = _count(body.get("tokens"), "tokens")
    period = body.get("period", "month")
    warn_at = body.get("warn_at", 0.8)
    if not isinstance(period, str) or not isinstance(warn_at, int | float):
        raise InvalidRequest("'period' is a word and 'warn_at' a number", param="period")

    def work(session: Session) -> int:
        group = groups.administer(session, caller, name)
        budget = groups.set_member_budget(
            session,
            caller,
            group=group,
            username=username,
            amount_nanos=amount,
            tokens=tokens,
            period=period,
            warn_at=float(warn_at),
            now=datetime.now(UTC),
        )
        audit.record(
            session,
            actor_id=caller.user_id,
            actor=caller.username,
            action="group.member_budget",
            target=f"{name}:{username}",
            detail={"amount": body.get("amount"), "tokens": tokens, "period": period},
        )
        return budget.id

    budget_id = await gateway.transact(work)
    await gateway.catalog_changed()
    return json_response({"budget_id": budget_id, "group": name, "member": username})


async def member_limits(request: Request) -> Response:
    """``PUT /groups/{group}/members/{username}/limits`` {rpm, tpm, concurrency}."""
    gateway, caller = await authenticate(request, full=True)
    name, username = request.path_params["group"], request.path_params["username"]
    body = await json_body(request)
    values = {what: _count(body.get(what), what) for what in ("rpm", "tpm", "concurrency")}

    def work(session: Session) -> None:
        group = groups.administer(session, caller, name)
        groups.set_member_limit(
            session, caller, group=group, username=username, now=datetime.now(UTC), **values
        )
        audit.record(
            session,
            actor_id=caller.user_id,
            actor=caller.username,
            action="group.member_limits",
            target=f"{name}:{username}",
            detail=dict(values),
        )

    await gateway.transact(work)
    await gateway.catalog_changed()
    return json_response({"group": name, "member": username, **values})


async def group_usage(request: Request) -> Response:
    """``GET /groups/{group}/usage?days=30``: the group's requests, tokens and cost per day."""
    gateway, caller = await authenticate(request, full=True)
    name = request.path_params["group"]
    days = request.query_params.get("days", "30")
    if not days.isdigit() or not 1 <= int(days) <= 366:
        raise InvalidRequest("'days' is from 1 to 366", param="days")
    today = datetime.now(UTC).date()
    usage = UsageFilter(first_day=today - timedelta(days=int(days) - 1), last_day=today, group=name)

    def work(session: Session) -> dict[str, Any]:
        groups.administer(session, caller, name)
        found = report(session, usage)
        return {
            "group": name,
            "first_day": usage.first_day.isoformat(),
            "last_day": usage.last_day.isoformat(),
            "overall": asdict(found.overall),
            "per_model": [{"model": model, **asdict(totals)} for model, totals in found.per_model],
        }

    return json_response(await gateway.transact(work))


def _amount(value: Any) -> int | None:
    return None if value is None else parse_amount(value, param="amount")


def _count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"'{name}' is a count", param=name)
    return value
