"""The rules' plans: which checks a call is admitted against, worked out once per caller and
model and kept, but never past the end of a budget's period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hepai_server.governance.budgets import BudgetRule
from hepai_server.governance.limits import RateRule
from hepai_server.governance.rules import Plan, Rules
from hepai_server.services.accounts import Caller

SHANGHAI = ZoneInfo("Asia/Shanghai")
CALLER = Caller(7, 3, "ada", None, False, frozenset({"physics"}), None, None)


def rules() -> Rules:
    budget = BudgetRule(1, "user", 3, 10_000, None, "day", 0.8, datetime(2026, 1, 1, tzinfo=UTC))
    rate = RateRule("user", 3, "", rpm=60, tpm=1000, concurrency=2)
    return Rules([budget], [rate], {"physics": 5})


def plan_at(r: Rules, now: datetime, *, tokens: int = 10, cost: int = 100) -> Plan:
    return r.plan(
        CALLER, "gpt", tokens=tokens, cost=cost, now=now, zone=SHANGHAI, reservation_ttl=600
    )


def test_each_call_reserves_its_own_amounts_on_a_kept_plan() -> None:
    r = rules()
    now = datetime(2026, 12, 7, 10, 0, tzinfo=SHANGHAI)
    first, second = plan_at(r, now, tokens=10, cost=100), plan_at(r, now, tokens=55, cost=9)
    assert [c.amount for c in first.checks] == [1, 10, 1, 100]
    assert [c.amount for c in second.checks] == [1, 55, 1, 9]
    assert [c.key for c in first.checks] == [c.key for c in second.checks]


def test_a_plan_kept_before_midnight_is_not_used_in_the_next_day() -> None:
    r = rules()
    before = datetime(2026, 12, 7, 23, 59, 50, tzinfo=SHANGHAI)
    (budget,) = [c for c in plan_at(r, before).checks if c.kind == "budget"]
    assert budget.key.endswith(":2026-12-07:m")
    (after,) = [c for c in plan_at(r, before + timedelta(seconds=20)).checks if c.kind == "budget"]
    assert after.key.endswith(":2026-12-08:m"), "the new day's budget counter"
