"""Admin → budgets and limits: every budget with its current period's spend and what is left,
every rate limit; set or clear a budget for a user, group or key, and RPM, TPM and concurrency
limits for a user, group, key, every user, or a model.

Every change is audited and reaches every process: this one at once, the others through the
catalog's generation (and Redis), as the CLI's do.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.governance import Budget, RateLimit
from hepai_server.db.tables import ModelName
from hepai_server.errors import InvalidRequest, NotFound
from hepai_server.governance import budgets, limits, subjects
from hepai_server.governance.prices import parse_amount, written_amount
from hepai_server.portal.notices import describe
from hepai_server.portal.views.admin import page_number
from hepai_server.portal.views.providers import changed
from hepai_server.portal.web import Portal, Viewer, done, gateway, record_action
from hepai_server.services.directory import Page

PAGE_SIZE = 50
BUDGET_FIELDS = ("scope", "subject", "amount", "tokens", "period", "warn_at")
LIMIT_FIELDS = ("scope", "subject", "model", "rpm", "tpm", "concurrency")
RATES = ("rpm", "tpm", "concurrency")
BLANK_BUDGET = {"scope": "user", "period": "month", "warn_at": "80"}


async def budgets_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    return await render_budgets(request, portal, viewer)


async def render_budgets(
    request: Request,
    portal: Portal,
    viewer: Viewer,
    *,
    budget_typed: dict[str, str] | None = None,
    limit_typed: dict[str, str] | None = None,
    error: str | None = None,
    detail: str | None = None,
    refused: str = "",
) -> Response:
    """Both lists and both forms; after a refused form (``refused``: "budget" or "limit"),
    with its error and what was typed; after an edit link, with that row's values."""
    query = request.query_params
    text = query.get("q", "").strip()[:128]
    scope = query.get("scope", "")
    scope = scope if scope in subjects.LIMIT_SCOPES else ""
    now, zone = datetime.now(UTC), portal.settings.budget_zone
    gw = gateway(request)

    def work(session: Session) -> dict[str, Any]:
        pages = (page_number(request), page_number(request, "lpage"))
        return {
            **listing(session, text=text, scope=scope, pages=pages, now=now, zone=zone),
            "budget_typed": budget_typed or edited_budget(session, query.get("budget", "")),
            "limit_typed": limit_typed or edited_limit(session, query.get("limit", "")),
            "worker_models": list(session.scalars(select(ModelName.name))),
        }

    context = await gw.transact(work)
    settings = portal.settings
    defaults = (settings.default_rpm, settings.default_tpm, settings.default_concurrency)
    return portal.render(
        request,
        "admin_budgets.html",
        viewer=viewer,
        q=text,
        scope=scope,
        periods=budgets.PERIODS,
        budget_scopes=subjects.BUDGET_SCOPES,
        limit_scopes=subjects.LIMIT_SCOPES,
        models=sorted(gw.catalog.ids() | set(context.pop("worker_models"))),
        defaults=defaults if any(value is not None for value in defaults) else None,
        error=error,
        detail=detail,
        refused=refused,
        status=400 if error else 200,
        **context,
    )


def listing(
    session: Session,
    *,
    text: str,
    scope: str,
    pages: tuple[int, int],
    now: datetime,
    zone: tzinfo,
) -> dict[str, Any]:
    """A page of the budgets (each in its current period) and one of the rate limits whose
    subject is named like ``text`` and of the kind ``scope`` (all: ""), with their names."""
    found = (
        budgets.find_budgets(session, text=text, scope=scope, number=pages[0], size=PAGE_SIZE)
        if scope in ("", *subjects.BUDGET_SCOPES)
        else Page[Budget]([], 0, 1, PAGE_SIZE)
    )
    rates = limits.find_limits(session, text=text, scope=scope, number=pages[1], size=PAGE_SIZE)
    owners = [(row.scope, row.subject_id) for row in found.items]
    owners += [(row.scope, row.subject_id) for row in rates.items]
    return {
        "found": found,
        "statuses": [
            budgets.status(session, budgets.rule_of(row), now=now, zone=zone) for row in found.items
        ],
        "rates": rates,
        "named": subjects.describe(session, owners),
    }


def edited_budget(session: Session, raw: str) -> dict[str, str]:
    """The form filled with a budget's values (the edit link), or blank."""
    row = session.get(Budget, int(raw)) if raw.isdigit() and len(raw) < 12 else None
    if row is None:
        return dict(BLANK_BUDGET)
    named = subjects.describe(session, [(row.scope, row.subject_id)])
    subject = named.get((row.scope, row.subject_id))
    return {
        "scope": row.scope,
        "subject": str(row.subject_id) if row.scope == "key" else (subject.name if subject else ""),
        "amount": "" if row.amount_nanos is None else written_amount(row.amount_nanos),
        "tokens": "" if row.tokens is None else str(row.tokens),
        "period": row.period,
        "warn_at": f"{row.warn_at * 100:g}",
    }


def edited_limit(session: Session, raw: str) -> dict[str, str]:
    row = session.get(RateLimit, int(raw)) if raw.isdigit() and len(raw) < 12 else None
    if row is None:
        return {"scope": "user"}
    named = subjects.describe(session, [(row.scope, row.subject_id)])
    subject = named.get((row.scope, row.subject_id))
    scope = "everyone" if (row.scope, row.subject_id) == ("user", 0) else row.scope
    return {
        "scope": scope,
        "subject": str(row.subject_id) if row.scope == "key" else (subject.name if subject else ""),
        "model": row.model,
        **{name: "" if getattr(row, name) is None else str(getattr(row, name)) for name in RATES},
    }


def typed(form: FormData, fields: tuple[str, ...]) -> dict[str, str]:
    return {name: str(form.get(name) or "").strip()[:256] for name in fields}


def count(value: str, name: str) -> int | None:
    """A whole number typed in a form, or None when left empty."""
    if not value:
        return None
    if not value.isdigit() or len(value) > 15:
        raise InvalidRequest(f"'{name}' is a whole number", param=name)
    return int(value)


def share(value: str) -> float:
    """The warning threshold, typed as a percentage of the limit."""
    try:
        percent = float(value or "80")
    except ValueError:
        percent = -1.0
    if not 0 < percent <= 100:
        raise InvalidRequest("warn at a share from 1 to 100 %", param="warn_at")
    return percent / 100


async def change_budget(request: Request, portal: Portal) -> Response:
    """Set a budget from the form (replacing the subject's own), or clear one by its id."""
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    if form.get("action") == "clear":
        return await clear_row(request, viewer, "budget", str(form.get("id") or ""))
    fields = typed(form, BUDGET_FIELDS)

    def work(session: Session) -> str:
        scope = fields["scope"]
        amount = parse_amount(fields["amount"]) if fields["amount"] else None
        tokens = count(fields["tokens"], "tokens")
        warn_at = share(fields["warn_at"])
        subject_id = subjects.resolve(session, scope, fields["subject"])
        budgets.set_budget(
            session,
            scope=scope,
            subject_id=subject_id,
            amount_nanos=amount,
            tokens=tokens,
            period=fields["period"],
            warn_at=warn_at,
            now=datetime.now(UTC),
            by=viewer.username,
        )
        target = f"{scope}:{fields['subject']}"
        detail = {
            "amount": fields["amount"] or None,
            "tokens": tokens,
            "period": fields["period"],
            "warn_at": warn_at,
        }
        record_action(session, viewer, request, "budget.set", target, detail)
        return target

    try:
        target = await gateway(request).transact(work)
    except (InvalidRequest, NotFound) as error:
        return await render_budgets(
            request,
            portal,
            viewer,
            budget_typed=fields,
            error=describe(error),
            detail=error.message,
            refused="budget",
        )
    await changed(request)
    return await done(request, viewer, "/admin/budgets", "budgets.saved", name=target)


async def change_limit(request: Request, portal: Portal) -> Response:
    """Set a rate limit from the form (replacing the subject's own on that model), or clear
    one by its id."""
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    if form.get("action") == "clear":
        return await clear_row(request, viewer, "limit", str(form.get("id") or ""))
    fields = typed(form, LIMIT_FIELDS)
    gw = gateway(request)

    def work(session: Session) -> str:
        scope, model = fields["scope"], fields["model"]
        if model and model not in gw.catalog.ids() and session.get(ModelName, model) is None:
            raise InvalidRequest(f"no model {model!r}", param="model")
        rates = {name: count(fields[name], name) for name in RATES}
        if scope == "everyone":
            stored, subject_id, target = "user", 0, "everyone"
        elif scope == "model":
            stored, subject_id, target = "model", 0, f"model:{model}"
        else:
            stored, target = scope, f"{scope}:{fields['subject']}"
            subject_id = subjects.resolve(session, scope, fields["subject"])
        limits.set_limit(
            session,
            scope=stored,
            subject_id=subject_id,
            model=model,
            now=datetime.now(UTC),
            by=viewer.username,
            **rates,
        )
        record_action(session, viewer, request, "limit.set", target, {"model": model, **rates})
        return target

    try:
        target = await gw.transact(work)
    except (InvalidRequest, NotFound) as error:
        return await render_budgets(
            request,
            portal,
            viewer,
            limit_typed=fields,
            error=describe(error),
            detail=error.message,
            refused="limit",
        )
    await changed(request)
    return await done(request, viewer, "/admin/budgets", "limits.saved", name=target)


async def clear_row(request: Request, viewer: Viewer, kind: str, raw: str) -> Response:
    """Remove one budget or rate limit (``kind``) by its id, saying whose it was."""
    row_id = int(raw) if raw.isdigit() and len(raw) < 12 else 0

    def work(session: Session) -> str:
        row: Budget | RateLimit | None = (
            session.get(Budget, row_id) if kind == "budget" else session.get(RateLimit, row_id)
        )
        if row is None:
            raise NotFound(f"no such {kind}")
        named = subjects.describe(session, [(row.scope, row.subject_id)])
        subject = named.get((row.scope, row.subject_id))
        target = f"{row.scope}:{subject.name if subject else row.subject_id}"
        if isinstance(row, Budget):
            budgets.clear_budget(session, scope=row.scope, subject_id=row.subject_id)
            record_action(session, viewer, request, "budget.clear", target)
        else:
            limits.clear_limit(session, scope=row.scope, subject_id=row.subject_id, model=row.model)
            record_action(session, viewer, request, "limit.clear", target, {"model": row.model})
        return target

    target = await gateway(request).transact(work)
    await changed(request)
    return await done(request, viewer, "/admin/budgets", f"{kind}s.cleared", name=target)
