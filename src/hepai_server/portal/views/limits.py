"""My limits and spend: every budget that counts my calls (mine, my groups', my keys') with what
is spent and left in its period, the rate limits my calls count against, what I spent today
and this month, and my latest budget notices: what ``GET /apiv2/billing/limits`` answers a
key, for the whole account."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.governance import budgets, notices, subjects
from hepai_server.governance.limits import RateRule
from hepai_server.governance.rules import Rules
from hepai_server.portal.web import Portal, gateway
from hepai_server.services import accounts, usage_report
from hepai_server.services.accounts import Caller
from hepai_server.services.usage_report import UsageFilter


@dataclass(frozen=True, slots=True)
class Counted:
    """A rate limit as I see it: whose it is (``whom``: a catalog key) and the rule."""

    whom: str
    name: str
    rule: RateRule


async def limits_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    gw = gateway(request)
    rules = gw.limiter.rules
    caller = viewer.caller()
    now, zone = datetime.now(UTC), portal.settings.budget_zone
    today = now.date()

    def work(session: Session) -> dict[str, Any]:
        owner = accounts.get_user_by_id(session, viewer.user_id)
        keys = [key for key in accounts.list_api_keys(session, user=owner) if not key.revoked_at]
        mine = rules.budgets_for(caller)
        mine += [rule for key in keys if (rule := rules.budget_of("key", key.id)) is not None]
        named = subjects.describe(session, [(rule.scope, rule.subject_id) for rule in mine])
        month = usage_report.report(
            session,
            UsageFilter(first_day=today.replace(day=1), last_day=today, user_id=viewer.user_id),
        )
        return {
            "statuses": [budgets.status(session, rule, now=now, zone=zone) for rule in mine],
            "named": named,
            "rates": counted(rules.rates_for(caller), named_groups(session, rules, caller))
            + [
                Counted("key", key.name, rule)
                for key in keys
                for rule in rules.rates_of("key", key.id)
            ],
            "today": month.per_day[-1][1],
            "month": month.overall,
            "notices": notices.recent(session, user_id=viewer.user_id),
        }

    context = await gw.transact(work)
    return portal.render(request, "limits.html", viewer=viewer, **context)


def named_groups(session: Session, rules: Rules, caller: Caller) -> dict[int, str]:
    """The names of the caller's groups that rules know, by id."""
    ids = rules.group_ids_of(caller)
    found = subjects.describe(session, [("group", group_id) for group_id in ids])
    return {subject.subject_id: subject.name for subject in found.values()}


def counted(rates: list[RateRule], groups: dict[int, str]) -> list[Counted]:
    """The rules the account's calls count against, each with whose it is: mine, every
    user's default, a group's, or a model's for everyone together."""
    shown = []
    for rule in rates:
        if rule.scope == "user":
            shown.append(Counted("mine" if rule.subject_id else "everyone", "", rule))
        elif rule.scope == "group":
            shown.append(Counted("group", groups.get(rule.subject_id, ""), rule))
        else:
            shown.append(Counted("model", "", rule))
    return shown
