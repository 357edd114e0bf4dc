"""Group administrators, in process: an experiment's lead manages its group's members and gives
them budgets and rate limits within the group's own, sees its usage, and nothing more."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from hepai_server.errors import PermissionDenied
from hepai_server.governance import budgets, groups, limits
from hepai_server.services import accounts
from tests.inprocess import Account, App


def lead_of(app: App, group: str, lead: Account) -> None:
    with app.platform.session() as session:
        groups.set_admin(
            session,
            group=accounts.ensure_group(session, group),
            user=accounts.get_user(session, lead.username),
            admin=True,
        )


async def call(
    app: App, key: str, method: str, path: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    async with app.client(headers={"authorization": f"Bearer {key}"}) as client:
        return await client.request(method, "/apiv2" + path, json=body)


async def join(app: App, group: str, lead: Account, user: Account) -> None:
    """The lead invites the user, who accepts."""
    await call(app, lead.key, "POST", f"/groups/{group}/members/{user.username}")
    assert (await call(app, user.key, "POST", f"/groups/{group}/join")).status_code == 200


async def test_a_lead_manages_the_members_of_their_own_group_only(
    app: App, make_user, unique
) -> None:
    group, other = unique("cms"), unique("atlas")
    lead, physicist, stranger = make_user(), make_user(), make_user(groups=(other,))
    lead_of(app, group, lead)
    invited = await call(app, lead.key, "POST", f"/groups/{group}/members/{physicist.username}")
    assert invited.status_code == 200 and invited.json()["invited"] is True
    listed = (await call(app, lead.key, "GET", "/groups")).json()["data"]
    assert listed[0]["members"] == [lead.username]  # not until they accept
    assert (await call(app, stranger.key, "POST", f"/groups/{group}/join")).status_code == 404
    joined = await call(app, physicist.key, "POST", f"/groups/{group}/join")
    assert joined.status_code == 200 and joined.json()["member_now"] is True
    assert (await call(app, physicist.key, "POST", f"/groups/{group}/join")).status_code == 404
    listed = (await call(app, lead.key, "GET", "/groups")).json()["data"]
    assert [row["name"] for row in listed] == [group]
    assert set(listed[0]["members"]) == {lead.username, physicist.username}
    assert listed[0]["admins"] == [lead.username]
    # Not their group: it does not exist for them.
    assert (await call(app, lead.key, "POST", f"/groups/{other}/members/x")).status_code == 404
    assert (await call(app, stranger.key, "GET", f"/groups/{group}/usage")).status_code == 404
    removed = await call(app, lead.key, "DELETE", f"/groups/{group}/members/{physicist.username}")
    assert removed.status_code == 200
    with app.platform.session() as session:
        assert group not in {g.name for g in accounts.get_user(session, physicist.username).groups}


async def test_member_budgets_and_limits_stay_within_the_groups_own(
    app: App, make_user, unique
) -> None:
    group = unique("lhcb")
    lead, member = make_user(), make_user()
    lead_of(app, group, lead)
    await join(app, group, lead, member)
    path = f"/groups/{group}/members/{member.username}"
    no_budget = await call(app, lead.key, "PUT", path + "/budget", {"amount": 5})
    assert no_budget.status_code == 403 and "no budget" in no_budget.json()["error"]["message"]
    with app.platform.session() as session:
        group_id = groups.get_group(session, group).id
        budgets.set_budget(
            session,
            scope="group",
            subject_id=group_id,
            amount_nanos=10 * 10**9,
            tokens=None,
            period="month",
            warn_at=0.8,
            now=datetime.now(UTC),
            by="test",
        )
        limits.set_limit(
            session,
            scope="group",
            subject_id=group_id,
            model="",
            rpm=60,
            tpm=None,
            concurrency=None,
            now=datetime.now(UTC),
            by="test",
        )
    too_much = await call(app, lead.key, "PUT", path + "/budget", {"amount": "20"})
    assert too_much.status_code == 403 and too_much.json()["error"]["param"] == "amount"
    within = await call(app, lead.key, "PUT", path + "/budget", {"amount": "5", "period": "week"})
    assert within.status_code == 200, within.text
    faster = await call(app, lead.key, "PUT", path + "/limits", {"rpm": 100})
    assert faster.status_code == 403 and faster.json()["error"]["param"] == "rpm"
    slower = await call(app, lead.key, "PUT", path + "/limits", {"rpm": 30, "concurrency": 2})
    assert slower.status_code == 200
    with app.platform.session() as session:
        own = {(b.scope, b.subject_id): b for b in budgets.list_budgets(session)}[
            ("user", member.user_id)
        ]
        assert own.amount_nanos == 5 * 10**9 and own.period == "week"
        rule = next(
            r
            for r in limits.list_limits(session)
            if (r.scope, r.subject_id) == ("user", member.user_id)
        )
        assert (rule.rpm, rule.concurrency) == (30, 2)
    # Not a member of the group: not the lead's to budget.
    outsider = make_user()
    refused = await call(
        app, lead.key, "PUT", f"/groups/{group}/members/{outsider.username}/budget", {"amount": 1}
    )
    assert refused.status_code == 404


async def test_a_lead_cannot_lift_their_own_limits_or_those_an_admin_set(
    app: App, make_user, unique
) -> None:
    group = unique("alice-lab")
    lead, member = make_user(), make_user()
    lead_of(app, group, lead)
    await join(app, group, lead, member)
    with app.platform.session() as session:
        # The group limits nothing itself, so its lead's ceiling is not what stops them here.
        limits.set_limit(
            session,
            scope="user",
            subject_id=member.user_id,
            model="",
            rpm=5,
            tpm=None,
            concurrency=None,
            now=datetime.now(UTC),
            by="root",
        )
    own = await call(
        app, lead.key, "PUT", f"/groups/{group}/members/{lead.username}/limits", {"rpm": 10**6}
    )
    assert own.status_code == 403 and "their own" in own.json()["error"]["message"]
    lifted = await call(
        app, lead.key, "PUT", f"/groups/{group}/members/{member.username}/limits", {"rpm": 10**6}
    )
    assert lifted.status_code == 403 and "set by an admin" in lifted.json()["error"]["message"]
    with app.platform.session() as session:
        caller = accounts.caller_of(accounts.get_user(session, lead.username))
        target = groups.get_group(session, group)
        with pytest.raises(PermissionDenied):
            groups.clear_member_limit(session, caller, group=target, username=member.username)
        with pytest.raises(PermissionDenied):
            groups.clear_member_budget(session, caller, group=target, username=lead.username)
    with app.platform.session() as session:
        rule = next(
            r
            for r in limits.list_limits(session)
            if (r.scope, r.subject_id) == ("user", member.user_id)
        )
        assert rule.rpm == 5


async def test_a_lead_cannot_bind_anyone_who_has_not_joined_and_unbinds_who_leaves(
    app: App, make_user, unique
) -> None:
    group = unique("belle2")
    lead, victim = make_user(), make_user(admin=True)
    lead_of(app, group, lead)
    path = f"/groups/{group}/members/{victim.username}"
    await call(app, lead.key, "POST", path)  # invited, not joined
    blocked = await call(app, lead.key, "PUT", path + "/limits", {"rpm": 1})
    assert blocked.status_code == 404
    assert (await call(app, victim.key, "POST", f"/groups/{group}/join")).status_code == 200
    assert (await call(app, lead.key, "PUT", path + "/limits", {"rpm": 1})).status_code == 200
    with app.platform.session() as session:
        (rule,) = [r for r in limits.list_limits(session) if r.subject_id == victim.user_id]
        assert rule.updated_by == f"{lead.username} (lead of {group})"
    assert (await call(app, lead.key, "DELETE", path)).status_code == 200
    with app.platform.session() as session:
        assert not [
            r
            for r in limits.list_limits(session)
            if (r.scope, r.subject_id) == ("user", victim.user_id)
        ]


async def test_a_lead_sees_the_groups_usage_with_a_key_of_full_access(
    app: App, make_user, unique
) -> None:
    group = unique("belle")
    lead = make_user()
    lead_of(app, group, lead)
    usage = await call(app, lead.key, "GET", f"/groups/{group}/usage?days=7")
    assert usage.status_code == 200 and usage.json()["overall"]["requests"] >= 0
    with app.platform.session() as session:
        _key, inference = accounts.create_api_key(
            session, user=accounts.get_user(session, lead.username), scope="inference"
        )
    assert (await call(app, inference, "GET", "/groups")).status_code == 403
    assert (await call(app, lead.key, "GET", f"/groups/{group}/usage?days=0")).status_code == 400
