"""The portal's governance pages, in process: admins set prices, budgets and rate limits that
hold at once (and are audited and announced to the other processes); users see their limits
and spend and their budget notices; a group's administrator manages its members' budgets and
limits within the group's own.

These tests change platform-wide prices and limits, so they run on an app of their own."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

from hepai_server.config import Settings
from hepai_server.db.governance import BudgetDaily, Notice
from hepai_server.governance import budgets, groups, limits
from hepai_server.governance.prices import parse_price
from hepai_server.services import accounts
from hepai_server.state.generation import Generation
from tests.inprocess import Account, App, prepare, running
from tests.portal import PASSWORD, AppVisitor

NANOS = 10**9


@pytest.fixture(scope="module")
async def gov(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[App]:
    """An app whose prices and everyone's limits no other test shares."""
    own = settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("gov") / "data"})
    async with running(prepare(own)) as started:
        yield started


def person(app: App, unique: Callable[[str], str], stem: str, **options: Any) -> Account:
    return app.platform.make_user(unique(stem), password=PASSWORD, **options)


async def signed_in(app: App, account: Account, language: str = "en") -> AppVisitor:
    visitor = AppVisitor(app, language=language)
    assert (await visitor.sign_in(account.username)).status_code == 303
    return visitor


def text_of(page: httpx.Response) -> str:
    """The page's words, tags dropped and entities read, for plain-text assertions."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page.text)))


def audited(app: App, action: str) -> list[dict[str, Any]]:
    with app.platform.session() as session:
        rows = session.execute(
            sa.text("SELECT actor, target, detail FROM audit_events WHERE action = :a ORDER BY id"),
            {"a": action},
        )
        return [dict(row._mapping) for row in rows]


def catalog_generation(app: App) -> int:
    generation = Generation(app.platform.settings.data_dir / "catalog.generation")
    try:
        return generation.read()
    finally:
        generation.close()


async def chat(app: App, key: str) -> Any:
    async with app.openai(key) as client:
        return await client.chat.completions.with_raw_response.create(
            model="mock/chat", messages=[{"role": "user", "content": "one two three"}]
        )


async def test_an_admin_prices_a_model_and_the_next_call_costs_it(
    gov: App, unique: Callable[[str], str]
) -> None:
    admin, user = person(gov, unique, "pricer", admin=True), person(gov, unique, "payer")
    async with await signed_in(gov, admin) as visitor:
        listing = await visitor.get("/admin/prices")
        assert listing.status_code == 200
        row = re.search(r'<tr data-price-model="mock/chat" data-source="">', listing.text)
        assert row, "an unpriced catalogue model is listed"
        before = catalog_generation(gov)
        saved = await visitor.submit(
            "/admin/prices/mock/chat",
            "/admin/prices/mock/chat",
            {"action": "set", "input": "2", "output": "8", "per_call": ""},
        )
        assert saved.status_code == 303 and saved.headers["location"] == "/admin/prices/mock/chat"
        page = text_of(await visitor.get("/admin/prices/mock/chat"))
        assert "The price of mock/chat is saved" in page
        assert "input 2.0000 per million tokens" in page and f"set here by {admin.username}" in page
        # This process serves the new price at once; the others are told.
        assert gov.gateway.limiter.prices.get("mock/chat") == parse_price({"input": 2, "output": 8})
        assert catalog_generation(gov) > before
        answer = await chat(gov, user.key)
        usage = answer.parse().usage
        row_of = await gov.platform.usage_row(answer.headers["x-request-id"])
        assert row_of["cost_nanos"] == usage.prompt_tokens * 2000 + usage.completion_tokens * 8000
        (event,) = [e for e in audited(gov, "price.set") if e["actor"] == admin.username]
        assert event["target"] == "mock/chat"
        assert '"input": "2"' in event["detail"] and '"output": "8"' in event["detail"]

        refused = await visitor.submit(
            "/admin/prices/mock/chat", "/admin/prices/mock/chat", {"action": "set", "input": "-1"}
        )
        assert refused.status_code == 400 and 'role="alert"' in refused.text
        assert "Prices are numbers from 0" in text_of(refused)
        assert 'id="price-input" name="input" inputmode="decimal" maxlength="32" value="-1"' in (
            refused.text
        )
        assert gov.gateway.limiter.prices.get("mock/chat") == parse_price({"input": 2, "output": 8})

        cleared = await visitor.submit(
            "/admin/prices/mock/chat", "/admin/prices/mock/chat", {"action": "clear"}
        )
        assert cleared.status_code == 303
        assert gov.gateway.limiter.prices.get("mock/chat") is None
        assert [e["target"] for e in audited(gov, "price.clear")] == ["mock/chat"]
        assert (await visitor.get("/admin/prices/no/such-model")).status_code == 404
    async with await signed_in(gov, user) as stranger:
        assert (await stranger.get("/admin/prices")).status_code == 403
        token = re.search(r'name="csrf_token" value="([^"]*)"', (await stranger.get("/")).text)
        assert token
        forged = await stranger.client.post(
            "/admin/prices/mock/chat", data={"csrf_token": token.group(1), "input": "0"}
        )
        assert forged.status_code == 403


async def test_an_admin_sets_budgets_and_limits_that_hold_at_once(
    gov: App, unique: Callable[[str], str]
) -> None:
    admin, user = person(gov, unique, "budgeter", admin=True), person(gov, unique, "spender")
    async with await signed_in(gov, admin) as visitor:
        saved = await visitor.submit(
            "/admin/budgets",
            "/admin/budgets",
            {
                "scope": "user",
                "subject": user.username,
                "amount": "5",
                "tokens": "",
                "period": "month",
                "warn_at": "75",
            },
        )
        assert saved.status_code == 303
        rule = gov.gateway.limiter.rules.budget_of("user", user.user_id)
        assert rule is not None and rule.amount_nanos == 5 * NANOS and rule.warn_at == 0.75
        # What the ledger charged this period shows as spent, and the rest as left.
        with gov.platform.session() as session:
            start, _end = rule.window(datetime.now(UTC), gov.platform.settings.budget_zone)
            session.add(
                BudgetDaily(
                    budget_id=rule.id, day=start, requests=3, cost_nanos=1_250_000_000, tokens=900
                )
            )
        listing = await visitor.get(f"/admin/budgets?q={user.username}")
        found = re.search(rf'<tr data-budget="user:{user.username}">(.*?)</tr>', listing.text, re.S)
        assert found, "the budget is listed by its user's name"
        cells = text_of(httpx.Response(200, text=found.group(1)))
        assert "5.00 CNY" in cells and "1.25 CNY" in cells and "3.75 CNY" in cells
        assert "75 %" in cells and admin.username in cells
        # The change link fills the form with the budget's values.
        edit = await visitor.get(f"/admin/budgets?budget={rule.id}")
        assert f'value="{user.username}"' in edit.text and 'value="5"' in edit.text

        # A limit of no requests refuses the user's next call in this process at once.
        limited = await visitor.submit(
            "/admin/budgets",
            "/admin/limits",
            {"scope": "user", "subject": user.username, "model": "", "rpm": "0"},
        )
        assert limited.status_code == 303
        with pytest.raises(openai.RateLimitError):
            await chat(gov, user.key)
        for scope, model in (("everyone", ""), ("model", "mock/embed")):
            answer = await visitor.submit(
                "/admin/budgets",
                "/admin/limits",
                {"scope": scope, "subject": "", "model": model, "concurrency": "50"},
            )
            assert answer.status_code == 303, answer.text
        rates = await visitor.get("/admin/budgets")
        assert (
            'data-limit="user:0:"' in rates.text and 'data-limit="model:0:mock/embed"' in rates.text
        )
        assert "every user (default)" in text_of(rates)

        # A refused form says why and keeps what was typed.
        nobody = await visitor.submit(
            "/admin/budgets",
            "/admin/budgets",
            {"scope": "group", "subject": "no-such-group", "amount": "3", "period": "week"},
        )
        assert nobody.status_code == 400 and "no such user, group or API key" in text_of(nobody)
        assert 'value="no-such-group"' in nobody.text
        assert re.search(r'<option value="week" selected>', nobody.text)
        no_rates = await visitor.submit(
            "/admin/budgets", "/admin/limits", {"scope": "user", "subject": user.username}
        )
        assert no_rates.status_code == 400 and "give at least one of them" in text_of(no_rates)

        # Removing them lets the user call again.
        ids = {
            match.group(2): match.group(1)
            for match in re.finditer(
                r'data-limit="([^"]*)".*?name="id" value="(\d+)"', rates.text, re.S
            )
        }
        for row_id in ids:
            cleared = await visitor.submit(
                "/admin/budgets", "/admin/limits", {"action": "clear", "id": row_id}
            )
            assert cleared.status_code == 303
        assert (await chat(gov, user.key)).status_code == 200
        assert (
            await visitor.submit(
                "/admin/budgets", "/admin/budgets", {"action": "clear", "id": str(rule.id)}
            )
        ).status_code == 303
        assert gov.gateway.limiter.rules.budget_of("user", user.user_id) is None
    targets = [e["target"] for e in audited(gov, "limit.clear") if e["actor"] == admin.username]
    assert sorted(targets) == sorted([f"user:{user.username}", "user:0", "model:0"])
    assert [e["target"] for e in audited(gov, "budget.set") if e["actor"] == admin.username] == [
        f"user:{user.username}"
    ]
    assert len([e for e in audited(gov, "budget.clear") if e["actor"] == admin.username]) == 1


def set_rules(app: App, **subjects: Any) -> None:
    """Budgets and limits straight through the services, as the CLI sets them."""
    now = datetime.now(UTC)
    with app.platform.session() as session:
        for scope, subject_id, amount, tokens in subjects.get("budgets", ()):
            budgets.set_budget(
                session,
                scope=scope,
                subject_id=subject_id,
                amount_nanos=amount,
                tokens=tokens,
                period="month",
                warn_at=0.8,
                now=now,
                by="test",
            )
        for scope, subject_id, rpm, tpm in subjects.get("limits", ()):
            limits.set_limit(
                session,
                scope=scope,
                subject_id=subject_id,
                model="",
                rpm=rpm,
                tpm=tpm,
                concurrency=None,
                now=now,
                by="test",
            )


async def test_a_user_sees_their_limits_and_spend_as_the_api_answers_them(
    gov: App, unique: Callable[[str], str]
) -> None:
    group = unique("optics")
    user = person(gov, unique, "reader", groups=(group,))
    with gov.platform.session() as session:
        group_id = groups.get_group(session, group).id
    set_rules(
        gov,
        budgets=[
            ("user", user.user_id, 20 * NANOS, None),
            ("group", group_id, None, 1_000_000),
            ("key", user.key_id, 2 * NANOS, None),
        ],
        limits=[("user", user.user_id, 120, None), ("group", group_id, None, 50_000)],
    )
    await gov.gateway.reload_catalog()
    async with await signed_in(gov, user) as visitor:
        page = await visitor.get("/settings/limits")
        assert page.status_code == 200
        words = text_of(page)
        assert "My budget" in words and f"group {group}" in words and "key default" in words
        assert "0.00 of 20.00 CNY" in words and "0 of 1,000,000 tokens" in words
        assert 'data-rate="mine::"' in page.text and f'data-rate="group:{group}:"' in page.text
        assert re.search(r'data-rate="mine::".*?data-rpm>120<', page.text, re.S)
        async with gov.client(headers={"authorization": f"Bearer {user.key}"}) as api:
            answer = (await api.get("/apiv2/billing/limits")).json()
        for budget in answer["budgets"]:
            if budget["amount"] is not None:
                shown = f"{float(budget['spent']):.2f} of {float(budget['amount']):.2f} CNY"
                assert shown in words
        assert {rule["rpm"] for rule in answer["rate_limits"]} == {120, None}
        assert "Limits &amp; spend" in (await visitor.get("/")).text  # the account menu's link
    loner = person(gov, unique, "unlimited")
    async with await signed_in(gov, loner) as visitor:
        page = await visitor.get("/settings/limits")
        assert "data-no-budgets" in page.text and "data-no-rates" in page.text


def notice(app: App, account: Account, kind: str, measure: str, spent: int, limit: int) -> int:
    with app.platform.session() as session:
        row = Notice(
            user_id=account.user_id,
            kind=f"budget.{kind}",
            detail={
                "budget_id": 1,
                "scope": "user",
                "subject": account.username,
                "spent": spent,
                "limit": limit,
                "measure": measure,
            },
            created_at=datetime.now(UTC),
        )
        session.add(row)
        session.flush()
        return row.id


async def test_budget_notices_show_on_the_dashboard_until_dismissed(
    gov: App, unique: Callable[[str], str]
) -> None:
    user, other = person(gov, unique, "warned"), person(gov, unique, "bystander")
    warning = notice(gov, user, "warning", "money", 8 * NANOS, 10 * NANOS)
    exhausted = notice(gov, user, "exhausted", "tokens", 50_000, 50_000)
    theirs = notice(gov, other, "warning", "money", 1, 2)
    async with await signed_in(gov, user) as visitor:
        home = text_of(await visitor.get("/"))
        assert "passed its warning level: 8.00 of 10.00 CNY spent" in home
        assert "is spent (50,000 of 50,000 tokens)" in home
        dismissed = await visitor.submit("/", f"/notices/{warning}/seen", {"back": "/"})
        assert dismissed.status_code == 303 and dismissed.headers["location"] == "/"
        home = await visitor.get("/")
        assert f'data-notice-id="{warning}"' not in home.text
        assert f'data-notice-id="{exhausted}"' in home.text
        assert (await visitor.submit("/", f"/notices/{theirs}/seen", {})).status_code == 404
        assert (await visitor.submit("/", "/notices/seen", {"back": "//evil"})).headers[
            "location"
        ] == "/"
        assert "data-notices" not in (await visitor.get("/")).text
        # The limits page keeps them, dismissed.
        kept = await visitor.get("/settings/limits")
        assert kept.text.count('class="notice ') == 2 and "/seen" not in kept.text
    with gov.platform.session() as session:
        seen = dict(session.execute(sa.select(Notice.id, Notice.seen_at)).all())
    assert seen[warning] is not None and seen[exhausted] is not None and seen[theirs] is None
    async with await signed_in(gov, other, language="zh-CN") as visitor:
        assert "已超过提醒阈值" in text_of(await visitor.get("/"))


def lead_of(app: App, group: str, account: Account) -> None:
    with app.platform.session() as session:
        groups.set_admin(
            session,
            group=accounts.ensure_group(session, group),
            user=accounts.get_user(session, account.username),
            admin=True,
        )


async def test_a_group_lead_manages_members_budgets_and_limits_within_the_groups_own(
    gov: App, unique: Callable[[str], str]
) -> None:
    group, other = unique("cms"), unique("atlas")
    lead, member = person(gov, unique, "lead"), person(gov, unique, "member")
    outsider = person(gov, unique, "outsider", groups=(other,))
    lead_of(gov, group, lead)
    mine = f"/groups/{group}"
    async with await signed_in(gov, lead) as visitor:
        home = await visitor.get("/")
        assert '<a href="/groups"' in home.text and "/admin/users" not in home.text
        listing = await visitor.get("/groups")
        assert f'data-my-group="{group}"' in listing.text
        assert f'data-my-group="{other}"' not in listing.text
        assert (await visitor.get(f"/groups/{other}")).status_code == 404

        # A lead invites; the user joins by accepting, from the notice on their home page.
        invited = await visitor.submit(mine, mine, {"action": "add", "username": member.username})
        assert invited.status_code == 303
        page = await visitor.get(mine)
        assert f"Invited {member.username}: they join when they accept" in text_of(page)
        assert f'data-member="{member.username}"' not in page.text
        async with await signed_in(gov, member) as invitee:
            home = await invitee.get("/")
            assert f"{lead.username} invites you to the group {group}." in text_of(home)
            joined = await invitee.submit("/", f"/groups/{group}/join", {"back": "/"})
            assert joined.status_code == 303
            assert f"You joined {group}." in text_of(await invitee.get("/"))
            again = await invitee.submit("/", f"/groups/{group}/join", {"back": "/"})
            assert again.status_code == 404
        assert f'data-member="{member.username}"' in (await visitor.get(mine)).text
        nobody = await visitor.submit(mine, mine, {"action": "add", "username": "no-such-user"})
        assert nobody.status_code == 303
        assert "There is no user of that name." in text_of(await visitor.get(mine))
        itself = await visitor.submit(mine, mine, {"action": "remove", "username": lead.username})
        assert itself.status_code == 303
        assert "cannot remove yourself" in text_of(await visitor.get(mine))

        # Without a budget of the group's own there is none to share.
        member_page = f"{mine}/members/{member.username}"
        first = await visitor.get(member_page)
        assert (
            "ask a platform administrator" in text_of(first) and 'name="amount"' not in first.text
        )
        refused = await visitor.submit(
            member_page, member_page, {"action": "budget", "amount": "1", "period": "month"}
        )
        assert refused.status_code == 400 and "no budget of its own to share" in text_of(refused)

        with gov.platform.session() as session:
            group_id = groups.get_group(session, group).id
        set_rules(
            gov,
            budgets=[("group", group_id, 10 * NANOS, None)],
            limits=[("group", group_id, 60, None)],
        )
        too_much = await visitor.submit(
            member_page,
            member_page,
            {"action": "budget", "amount": "20", "period": "week", "warn_at": "90"},
        )
        assert too_much.status_code == 400 and "stay within the group's own" in text_of(too_much)
        assert 'value="20"' in too_much.text and '<option value="week" selected>' in too_much.text
        within = await visitor.submit(
            member_page,
            member_page,
            {"action": "budget", "amount": "5", "period": "week", "warn_at": "90"},
        )
        assert within.status_code == 303 and within.headers["location"] == member_page
        faster = await visitor.submit(member_page, member_page, {"action": "limits", "rpm": "100"})
        assert faster.status_code == 400 and "stay within the group's own" in text_of(faster)
        slower = await visitor.submit(
            member_page, member_page, {"action": "limits", "rpm": "30", "concurrency": "2"}
        )
        assert slower.status_code == 303
        rules = gov.gateway.limiter.rules
        budget = rules.budget_of("user", member.user_id)
        assert budget is not None and (budget.amount_nanos, budget.period) == (5 * NANOS, "week")
        assert [(r.rpm, r.concurrency) for r in rules.rates_of("user", member.user_id)] == [(30, 2)]
        shown = text_of(await visitor.get(member_page))
        assert "Budget of" not in shown or "saved" in shown
        assert "0.00 of 5.00 CNY" in shown and "30 requests/min · 2 at once" in shown
        group_page = await visitor.get(mine)
        row = re.search(rf'<tr data-member="{member.username}">(.*?)</tr>', group_page.text, re.S)
        assert row and "0.00 of 5.00 CNY" in row.group(1) and "30 requests/min" in row.group(1)
        assert 'data-total="requests"' in group_page.text
        searched = await visitor.get(f"{mine}?q={member.username.upper()}")
        assert 'data-total-members="1"' in searched.text
        assert f'data-member="{member.username}"' in searched.text
        assert "No member matches." in text_of(await visitor.get(f"{mine}?q=nobody-at-all"))

        for action in ("clear_budget", "clear_limits"):
            assert (
                await visitor.submit(member_page, member_page, {"action": action})
            ).status_code == 303
        assert gov.gateway.limiter.rules.budget_of("user", member.user_id) is None
        assert gov.gateway.limiter.rules.rates_of("user", member.user_id) == []
        # Someone outside the group is not the lead's to budget.
        stranger = f"{mine}/members/{outsider.username}"
        assert (await visitor.get(stranger)).status_code == 404
        removed = await visitor.submit(
            mine, mine, {"action": "remove", "username": member.username}
        )
        assert removed.status_code == 303
    with gov.platform.session() as session:
        assert group not in {g.name for g in accounts.get_user(session, member.username).groups}
    done = {
        e["target"]
        for action in (
            "group.member_budget",
            "group.member_limits",
            "group.member_budget_clear",
            "group.member_limits_clear",
        )
        for e in audited(gov, action)
        if e["actor"] == lead.username
    }
    assert done == {f"{group}:{member.username}"}
    async with await signed_in(gov, outsider) as visitor:
        assert '<a href="/groups"' not in (await visitor.get("/")).text
        assert (await visitor.get(mine)).status_code == 404
        assert "You administer no group." in text_of(await visitor.get("/groups"))


async def test_an_admin_makes_a_user_a_groups_administrator_from_the_group_page(
    gov: App, unique: Callable[[str], str]
) -> None:
    group = unique("lhcb")
    admin, lead = person(gov, unique, "root", admin=True), person(gov, unique, "chosen")
    with gov.platform.session() as session:
        accounts.ensure_group(session, group)
    page = f"/admin/groups/{group}"
    async with await signed_in(gov, admin) as visitor:
        made = await visitor.submit(page, page, {"action": "admin_add", "username": lead.username})
        assert made.status_code == 303
        shown = await visitor.get(page)
        assert f"{lead.username} now administers this group." in text_of(shown)
        assert f'data-member="{lead.username}" data-group-admin' in shown.text
        assert f'data-my-group="{group}"' in (await visitor.get("/groups")).text  # admins see all
    assert [e["target"] for e in audited(gov, "group.admin_add")][-1] == f"{group}:{lead.username}"
    async with await signed_in(gov, lead) as visitor:
        assert f'data-my-group="{group}"' in (await visitor.get("/groups")).text
    async with await signed_in(gov, admin) as visitor:
        undone = await visitor.submit(
            page, page, {"action": "admin_remove", "username": lead.username}
        )
        assert undone.status_code == 303
    async with await signed_in(gov, lead) as visitor:
        assert (await visitor.get(f"/groups/{group}")).status_code == 404


async def test_the_governance_pages_refuse_whoever_may_not_use_them(
    gov: App, unique: Callable[[str], str]
) -> None:
    group = unique("belle")
    user = person(gov, unique, "climber", groups=(group,))
    async with AppVisitor(gov) as anonymous:
        for path in ("/settings/limits", "/groups", f"/groups/{group}", "/admin/budgets"):
            answer = await anonymous.get(path)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/login?")
    async with await signed_in(gov, user) as visitor:
        for path in ("/admin/prices", "/admin/prices/mock/chat", "/admin/budgets"):
            assert (await visitor.get(path)).status_code == 403, path
        mine = {"scope": "user", "subject": user.username}
        forms = [
            ("/admin/budgets", {**mine, "amount": "1000000", "period": "month"}),
            ("/admin/limits", {**mine, "rpm": "100000"}),
            ("/admin/prices/mock/chat", {"action": "set", "input": "0"}),
            (f"/admin/groups/{group}", {"action": "admin_add", "username": user.username}),
            (f"/groups/{group}", {"action": "add", "username": user.username}),
            (f"/groups/{group}/members/{user.username}", {"action": "limits", "rpm": "9"}),
        ]
        for action, fields in forms:
            refused = await visitor.submit("/settings/limits", action, fields)
            assert refused.status_code in (403, 404), action
        unsigned = await visitor.client.post("/notices/seen", data={"back": "/"})
        assert unsigned.status_code == 403
    rules = gov.gateway.limiter.rules
    assert rules.budget_of("user", user.user_id) is None
    assert rules.rates_of("user", user.user_id) == []
    with gov.platform.session() as session:
        assert not groups.admins_of(session, groups.get_group(session, group))
        events = session.execute(
            sa.text("SELECT count(*) FROM audit_events WHERE actor = :u"), {"u": user.username}
        ).scalar_one()
    assert events == 0
