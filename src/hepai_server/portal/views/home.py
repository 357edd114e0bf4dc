"""The home page: my usage today and this month, my keys, the models I use most, my recent
errors; and until I have a key, the first steps."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.governance import Budget
from hepai_server.governance import budgets
from hepai_server.portal.snippets import for_model
from hepai_server.portal.views.models import available_models
from hepai_server.portal.web import Portal, gateway
from hepai_server.services import accounts, usage_log, usage_report
from hepai_server.services.usage_report import UsageFilter


async def home(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    today = datetime.now(UTC).date()
    zone = portal.settings.budget_zone

    def work(session: Session) -> dict[str, Any]:
        owner = accounts.get_user_by_id(session, viewer.user_id)
        keys = [key for key in accounts.list_api_keys(session, user=owner) if not key.revoked_at]
        month = usage_report.report(
            session,
            UsageFilter(first_day=today.replace(day=1), last_day=today, user_id=viewer.user_id),
        )
        errors, _more = usage_log.latest(session, user_id=viewer.user_id, errors_only=True, limit=5)
        mine = session.scalar(
            select(Budget).where(Budget.scope == "user", Budget.subject_id == viewer.user_id)
        )
        return {
            "budget": budget_status(session, mine, zone) if mine is not None else None,
            "keys": sorted(keys, key=lambda key: -key.id)[:5],
            "key_count": len(keys),
            "today": month.per_day[-1][1],
            "month": month.overall,
            "top_models": month.per_model[:5],
            "errors": errors,
        }

    gw = gateway(request)
    context = await gw.transact(work)
    models = await available_models(gw, viewer.caller())
    first = next((m for m in models if m.type == "chat" and m.status != "offline"), None)
    return portal.render(
        request,
        "home.html",
        viewer=viewer,
        model_count=len(models),
        first_model=first,
        snippets=for_model(first.id, first.type, portal.base_url(request)) if first else [],
        **context,
    )


def budget_status(session: Session, budget: Budget, zone: tzinfo) -> dict[str, Any]:
    """My budget in its current period: what it allows, what is spent, what is left."""
    rule = budgets.rule_of(budget)
    start, _end = rule.window(datetime.now(UTC), zone)
    cost, tokens = budgets.spent(session, budget.id, start)
    return {
        "period": rule.period,
        "amount": rule.amount_nanos,
        "tokens": rule.tokens,
        "spent": cost,
        "spent_tokens": tokens,
        "left": None if rule.amount_nanos is None else max(0, rule.amount_nanos - cost),
        "left_tokens": None if rule.tokens is None else max(0, rule.tokens - tokens),
    }
