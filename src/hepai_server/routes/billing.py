"""What the caller may spend and how fast, and what it has spent: ``GET /billing/limits``
(the platform's own), and OpenAI's legacy ``/dashboard/billing/subscription`` and
``/dashboard/billing/usage``, which many chat front-ends read to show a balance."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.tables import UsageDaily
from hepai_server.errors import InvalidRequest
from hepai_server.governance import budgets
from hepai_server.governance.prices import NANOS, format_money
from hepai_server.governance.rules import Rules
from hepai_server.routes.http import authenticate, json_response
from hepai_server.services.accounts import Caller


async def billing_limits(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    rules = gateway.limiter.rules
    now = datetime.now(UTC)
    zone = gateway.settings.budget_zone
    mine = applicable(rules, caller)

    def work(session: Session) -> list[dict[str, Any]]:
        shown = []
        for budget in mine:
            start, end = budget.window(now, zone)
            money, tokens = budgets.spent(session, budget.id, start)
            shown.append(budget_view(budget, start, end, money, tokens))
        return shown

    return json_response(
        {
            "object": "billing.limits",
            "currency": gateway.settings.currency,
            "budgets": await gateway.transact(work),
            "rate_limits": [
                {
                    "scope": rule.scope,
                    "model": rule.model or None,
                    "rpm": rule.rpm,
                    "tpm": rule.tpm,
                    "concurrency": rule.concurrency,
                }
                for rule in rules.rates_for(caller)
            ],
        }
    )


def applicable(rules: Rules, caller: Caller) -> list[budgets.BudgetRule]:
    """The caller's budgets: its user's, its groups', its key's."""
    found = []
    for budget in rules.budgets():
        if (
            (budget.scope == "user" and budget.subject_id == caller.user_id)
            or (budget.scope == "key" and budget.subject_id == caller.key_id)
            or (budget.scope == "group" and budget.subject_id in rules.group_ids_of(caller))
        ):
            found.append(budget)
    return found


def budget_view(
    budget: budgets.BudgetRule, start: date, end: datetime, money: int, tokens: int
) -> dict[str, Any]:
    amount = budget.amount_nanos
    return {
        "id": budget.id,
        "scope": budget.scope,
        "period": budget.period,
        "period_start": start.isoformat(),
        "period_end": None if budget.period == "once" else end.isoformat(),
        "amount": None if amount is None else format_money(amount),
        "spent": format_money(money),
        "remaining": None if amount is None else format_money(max(amount - money, 0)),
        "tokens": budget.tokens,
        "tokens_spent": tokens,
        "tokens_remaining": None if budget.tokens is None else max(budget.tokens - tokens, 0),
        "warn_at": budget.warn_at,
    }


async def dashboard_subscription(request: Request) -> Response:
    """OpenAI's subscription: the tightest money budget of the caller as its hard limit."""
    gateway, caller = await authenticate(request)
    money = [b for b in applicable(gateway.limiter.rules, caller) if b.amount_nanos is not None]
    tightest = min(money, key=lambda b: b.amount_nanos or 0, default=None)
    hard = (tightest.amount_nanos or 0) / NANOS if tightest else 0.0
    return json_response(
        {
            "object": "billing_subscription",
            "has_payment_method": False,
            "soft_limit_usd": hard * tightest.warn_at if tightest else 0.0,
            "hard_limit_usd": hard,
            "system_hard_limit_usd": hard,
            "access_until": 0,
        }
    )


async def dashboard_usage(request: Request) -> Response:
    """OpenAI's usage: what the caller's account spent between two dates, in cents of the
    currency (``total_usage``)."""
    gateway, caller = await authenticate(request)
    query = request.query_params
    today = datetime.now(UTC).date()
    try:
        start = date.fromisoformat(query.get("start_date") or (today.replace(day=1)).isoformat())
        end = date.fromisoformat(query.get("end_date") or (today + timedelta(days=1)).isoformat())
    except ValueError:
        raise InvalidRequest("start_date and end_date are YYYY-MM-DD", param="start_date") from None

    def work(session: Session) -> int:
        total = session.scalar(
            select(func.coalesce(func.sum(UsageDaily.cost_nanos), 0)).where(
                UsageDaily.user_id == caller.user_id,
                UsageDaily.day >= start,
                UsageDaily.day < end,
            )
        )
        return int(total or 0)

    nanos = await gateway.transact(work)
    return json_response({"object": "list", "total_usage": nanos / NANOS * 100})
