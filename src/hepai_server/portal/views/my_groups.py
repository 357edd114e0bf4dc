"""My groups: the pages of a group's administrator (an experiment's or a department's lead).

A lead sees the groups they administer (a platform admin, every group): each group's members,
budget and spend, rate limits and usage; invites (an admin adds) and removes members; and
gives each member a budget and rate limits within the group's own. The checks are the API's
(governance.groups): a group a viewer does not administer is not found, a member's budget is no
larger than the group's and their rates no higher. Every change is audited.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.governance import Budget, RateLimit
from hepai_server.db.tables import Group
from hepai_server.errors import HepAIError, InvalidRequest, NotFound
from hepai_server.governance import budgets, groups, limits
from hepai_server.governance.budgets import BudgetStatus
from hepai_server.governance.prices import parse_amount, written_amount
from hepai_server.portal.notices import describe
from hepai_server.portal.views.admin import page_number
from hepai_server.portal.views.budgets import RATES, count, share
from hepai_server.portal.views.providers import changed
from hepai_server.portal.views.usage import charts
from hepai_server.portal.web import Portal, Viewer, done, gateway, local_path, record_action
from hepai_server.services import usage_report
from hepai_server.services.usage_report import UsageFilter

SPANS = (7, 30, 90)
#: Members a page lists.
PAGE_SIZE = 50
BUDGET_FIELDS = ("amount", "tokens", "period", "warn_at")


def group_path(name: str, username: str | None = None) -> str:
    path = "/groups/" + quote(name, safe="")
    return path + ("/members/" + quote(username, safe="") if username else "")


def status_of(
    session: Session, row: Budget | None, now: datetime, zone: tzinfo
) -> BudgetStatus | None:
    """The budget in its current period, if there is one."""
    if row is None:
        return None
    return budgets.status(session, budgets.rule_of(row), now=now, zone=zone)


async def my_groups_page(request: Request, portal: Portal) -> Response:
    """The groups the viewer administers, each with its size, budget and spend."""
    viewer = await portal.viewer(request)
    now, zone = datetime.now(UTC), portal.settings.budget_zone

    def work(session: Session) -> list[dict[str, Any]]:
        chosen = groups.administered(session, viewer.caller())
        ids = [group.id for group in chosen]
        counts, admins = groups.member_counts(session, ids), groups.admin_names(session, ids)
        own = {row.subject_id: row for row in budgets.of_subjects(session, "group", ids)}
        rates = {row.subject_id: row for row in limits.of_subjects(session, "group", ids)}
        return [
            {
                "group": group,
                "members": counts.get(group.id, 0),
                "admins": admins.get(group.id, []),
                "budget": status_of(session, own.get(group.id), now, zone),
                "limit": rates.get(group.id),
            }
            for group in chosen
        ]

    rows = await gateway(request).transact(work)
    return portal.render(request, "my_groups.html", viewer=viewer, rows=rows)


async def my_group_page(request: Request, portal: Portal) -> Response:
    """One group: its budget and limits, its members with theirs and their spend (found by
    name, a page at a time), its usage."""
    viewer = await portal.viewer(request)
    name = request.path_params["name"]
    raw = request.query_params.get("days", "")
    days = int(raw) if raw.isdigit() and int(raw) in SPANS else 30
    text = request.query_params.get("q", "").strip()[:128]
    today = datetime.now(UTC).date()
    usage = UsageFilter(first_day=today - timedelta(days=days - 1), last_day=today, group=name)
    now, zone = datetime.now(UTC), portal.settings.budget_zone

    def work(session: Session) -> dict[str, Any]:
        group = groups.administer(session, viewer.caller(), name)
        found = groups.find_members(
            session, group, text=text, number=page_number(request), size=PAGE_SIZE
        )
        ids = [user.id for user in found.items]
        own_budgets = {row.subject_id: row for row in budgets.of_subjects(session, "user", ids)}
        own_limits = {row.subject_id: row for row in limits.of_subjects(session, "user", ids)}
        spend = usage_report.per_account(session, usage)
        return {
            "group": group,
            "found": found,
            "members": [
                {
                    "user": user,
                    "budget": status_of(session, own_budgets.get(user.id), now, zone),
                    "limit": own_limits.get(user.id),
                    "usage": spend.get(user.id),
                }
                for user in found.items
            ],
            "admins": {user.username for user in groups.admins_of(session, group)},
            "budget": status_of(session, groups.group_budget(session, group), now, zone),
            "limit": groups.group_limit(session, group),
            "result": usage_report.report(session, usage),
        }

    context = await gateway(request).transact(work)
    result = context["result"]
    return portal.render(
        request,
        "my_group.html",
        viewer=viewer,
        days=days,
        spans=SPANS,
        q=text,
        overall=result.overall,
        models=result.per_model,
        **charts(result, portal.translator(request)),
        **context,
    )


async def change_members(request: Request, portal: Portal) -> Response:
    """Add a member (by username) or remove one; a lead cannot remove themselves."""
    viewer = await portal.viewer(request)
    form = await portal.form(request, viewer)
    name = request.path_params["name"]
    action = str(form.get("action") or "")
    username = str(form.get("username") or "").strip()[:128]

    def work(session: Session) -> bool:
        group = groups.administer(session, viewer.caller(), name)
        if action == "add":
            if groups.invite(session, viewer.caller(), group=group, username=username):
                record_action(
                    session, viewer, request, "group.add_member", name, {"user": username}
                )
                return True
            record_action(session, viewer, request, "group.invite_member", name, {"user": username})
            return False
        if action == "remove":
            if username == viewer.username and not viewer.is_admin:
                raise InvalidRequest(
                    "a group's administrator cannot remove themselves", param="self"
                )
            groups.remove_member(session, group=group, username=username)
        else:
            raise InvalidRequest(f"unknown action {action!r}", param="action")
        record_action(session, viewer, request, "group.remove_member", name, {"user": username})
        return False

    gw = gateway(request)
    try:
        member_now = await gw.transact(work)
    except (InvalidRequest, NotFound) as error:
        if isinstance(error, NotFound) and error.param == "group":
            raise
        message = describe(error)
        return await done(request, viewer, group_path(name), message, ok=False, name=username)
    await gw.callers_changed()
    await gw.catalog_changed()
    message = "groups.member_removed"
    if action == "add":
        message = "groups.member_added" if member_now else "groups.member_invited"
    return await done(request, viewer, group_path(name), message, name=username)


async def join_group(request: Request, portal: Portal) -> Response:
    """Accept an invitation to a group (``/groups/{name}/join``, from the invitation notice)."""
    viewer = await portal.viewer(request)
    form = await portal.form(request, viewer)
    name = request.path_params["name"]
    back = local_path(str(form.get("back") or ""), "/")

    def work(session: Session) -> None:
        groups.join(session, viewer.caller(), name=name, now=datetime.now(UTC))
        record_action(session, viewer, request, "group.join", name, {})

    gw = gateway(request)
    await gw.transact(work)
    await gw.callers_changed()
    return await done(request, viewer, back, "groups.joined", name=name)


async def member_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    return await render_member(request, portal, viewer)


async def render_member(
    request: Request,
    portal: Portal,
    viewer: Viewer,
    *,
    typed: dict[str, str] | None = None,
    refused: str = "",
    error: str | None = None,
    detail: str | None = None,
) -> Response:
    """A member's budget and limits with the forms to change them (after a refusal, with the
    error and what was typed), and the group's own as their ceiling."""
    name, username = request.path_params["name"], request.path_params["username"]
    now, zone = datetime.now(UTC), portal.settings.budget_zone

    def work(session: Session) -> dict[str, Any]:
        group = groups.administer(session, viewer.caller(), name)
        user = groups.member(session, group, username)
        own_budget = next(iter(budgets.of_subjects(session, "user", [user.id])), None)
        own_limit = next(iter(limits.of_subjects(session, "user", [user.id])), None)
        return {
            "group": group,
            "member": user,
            "budget": status_of(session, own_budget, now, zone),
            "limit": own_limit,
            "group_budget": status_of(session, groups.group_budget(session, group), now, zone),
            "group_limit": groups.group_limit(session, group),
            "typed": typed or filled(own_budget, own_limit),
        }

    context = await gateway(request).transact(work)
    return portal.render(
        request,
        "my_group_member.html",
        viewer=viewer,
        periods=budgets.PERIODS,
        refused=refused,
        error=error,
        detail=detail,
        status=400 if error else 200,
        **context,
    )


def filled(budget: Budget | None, limit: RateLimit | None) -> dict[str, str]:
    """The forms filled with the member's own budget and limits."""
    values = {"period": "month", "warn_at": "80"}
    if budget is not None:
        values |= {
            "amount": "" if budget.amount_nanos is None else written_amount(budget.amount_nanos),
            "tokens": "" if budget.tokens is None else str(budget.tokens),
            "period": budget.period,
            "warn_at": f"{budget.warn_at * 100:g}",
        }
    if limit is not None:
        values |= {
            name: "" if getattr(limit, name) is None else str(getattr(limit, name))
            for name in RATES
        }
    return values


def typed_member(form: FormData) -> dict[str, str]:
    return {name: str(form.get(name) or "").strip()[:32] for name in (*BUDGET_FIELDS, *RATES)}


async def change_member(request: Request, portal: Portal) -> Response:
    """Set or clear a member's budget or rate limits, within the group's own."""
    viewer = await portal.viewer(request)
    form = await portal.form(request, viewer)
    name, username = request.path_params["name"], request.path_params["username"]
    action = str(form.get("action") or "")
    fields = typed_member(form)

    def work(session: Session) -> str:
        group = groups.administer(session, viewer.caller(), name)
        detail: dict[str, Any] = {}
        if action == "budget":
            detail = set_budget(session, viewer, group, username, fields)
        elif action == "limits":
            rates = {what: count(fields[what], what) for what in RATES}
            groups.set_member_limit(
                session,
                viewer.caller(),
                group=group,
                username=username,
                now=datetime.now(UTC),
                **rates,
            )
            detail = dict(rates)
        elif action == "clear_budget":
            groups.clear_member_budget(session, viewer.caller(), group=group, username=username)
        elif action == "clear_limits":
            groups.clear_member_limit(session, viewer.caller(), group=group, username=username)
        else:
            raise InvalidRequest(f"unknown action {action!r}", param="action")
        audited = {
            "budget": "group.member_budget",
            "limits": "group.member_limits",
            "clear_budget": "group.member_budget_clear",
            "clear_limits": "group.member_limits_clear",
        }[action]
        record_action(session, viewer, request, audited, f"{name}:{username}", detail)
        return f"groups.{action}_done"

    try:
        message = await gateway(request).transact(work)
    except HepAIError as error:
        if error.param in ("group", "username") or error.status >= 500:
            raise
        refused = "limits" if action in ("limits", "clear_limits") else "budget"
        return await render_member(
            request,
            portal,
            viewer,
            typed=fields,
            refused=refused,
            error=describe(error),
            detail=error.message,
        )
    await changed(request)
    return await done(request, viewer, group_path(name, username), message, name=username)


def set_budget(
    session: Session, viewer: Viewer, group: Group, username: str, fields: dict[str, str]
) -> dict[str, Any]:
    """The member's budget from the form, through the group administrators' own check."""
    amount = parse_amount(fields["amount"]) if fields["amount"] else None
    tokens = count(fields["tokens"], "tokens")
    warn_at = share(fields["warn_at"])
    groups.set_member_budget(
        session,
        viewer.caller(),
        group=group,
        username=username,
        amount_nanos=amount,
        tokens=tokens,
        period=fields["period"],
        warn_at=warn_at,
        now=datetime.now(UTC),
    )
    return {
        "amount": fields["amount"] or None,
        "tokens": tokens,
        "period": fields["period"],
        "warn_at": warn_at,
    }
