"""The governance pages in headless Chromium, in both languages, at a desktop's and a phone's
size: prices, budgets and limits for admins, limits and notices for users, and a group's pages
for its administrator fit the screen, meet WCAG 2.1 AA, and their forms work with the page's
own scripts (confirmations) under the strict content security policy."""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect

from tests.stack import Platform, Server

DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
#: A model whose calls never succeed, so pricing it here costs no other test anything.
PRICED = "broken/wrong-provider-key"


def sign_in(page: Page, username: str) -> None:
    page.context.clear_cookies()
    page.goto("/login")
    page.locator("#username").fill(username)
    page.locator("#password").fill("a-password")
    page.locator("form[action='/login'] button[type=submit]").click()
    page.wait_for_url(re.compile(r"^(?!.*/login).*$"))


def overflow(page: Page) -> int:
    return int(
        page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    )


def warn(platform: Platform, username: str) -> None:
    """A budget warning, as the alerts leave it for the budget's owner."""
    engine = sa.create_engine(platform.sqlalchemy_url)
    try:
        with engine.begin() as connection:
            user_id = connection.execute(
                sa.text("SELECT id FROM users WHERE username = :u"), {"u": username}
            ).scalar_one()
            connection.execute(
                sa.text(
                    "INSERT INTO notices (user_id, kind, detail, created_at) "
                    "VALUES (:u, 'budget.warning', :d, :t)"
                ),
                {
                    "u": user_id,
                    "d": json.dumps(
                        {
                            "budget_id": 1,
                            "scope": "user",
                            "subject": username,
                            "spent": 4_100_000_000,
                            "limit": 5_000_000_000,
                            "measure": "money",
                        }
                    ),
                    "t": datetime.now(UTC),
                },
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_governance_pages_fit_both_screens_and_meet_wcag_in_both_languages(
    browser: Browser, platform: Platform, server: Server, lang: str
) -> None:
    stem = f"gov{lang}{secrets.token_hex(2)}"
    group, admin, lead, member = f"{stem}-team", f"{stem}-admin", f"{stem}-lead", f"{stem}-member"
    platform.create_user(admin, "--admin")
    platform.create_user(lead)
    key = platform.create_user(member, "--group", group)
    platform.command("group", "admin", group, lead)
    platform.command("budget", "set", "--group", group, "--amount", "100", "--tokens", "5000000")
    platform.command("limit", "set", "--group", group, "--rpm", "600", "--tpm", "2000000")
    platform.command("budget", "set", "--user", member, "--amount", "5", "--period", "week")
    platform.command("limit", "set", "--user", member, "--rpm", "60", "--concurrency", "4")
    server.openai(key).chat.completions.create(
        model="mock/chat", messages=[{"role": "user", "content": "a question"}]
    )
    warn(platform, member)
    pages = {
        admin: [
            "/admin/prices",
            f"/admin/prices/{PRICED}",
            f"/admin/budgets?q={stem}",
            f"/admin/groups/{group}",
            "/groups",
        ],
        lead: ["/groups", f"/groups/{group}", f"/groups/{group}/members/{member}"],
        member: ["/", "/settings/limits"],
    }
    found: dict[str, str] = {}
    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(
            locale="zh-CN" if lang == "zh" else "en-US",
            base_url=server.url,
            viewport=viewport,  # type: ignore[arg-type]
            timezone_id="Asia/Shanghai",
            bypass_csp=True,  # axe-core injects its own script
        )
        page = context.new_page()
        try:
            for username, paths in pages.items():
                sign_in(page, username)
                for path in paths:
                    page.goto(path)
                    assert page.locator("main h1").count() == 1, path
                    assert overflow(page) <= 0, f"{path} is wider than the {size} screen"
                    results = Axe().run(page, options={**WCAG, "resultTypes": ["violations"]})
                    if results.violations_count:
                        found[f"{size} {path}"] = results.generate_report()
        finally:
            context.close()
    assert not found, "\n\n".join(f"{path}:\n{report}" for path, report in found.items())


def test_the_forms_work_in_a_browser_under_the_pages_own_policy(
    browser: Browser, platform: Platform, server: Server
) -> None:
    """No CSP bypass here: the confirmations are the portal's own script."""
    stem = f"govforms{secrets.token_hex(2)}"
    group, admin, lead, member = f"{stem}-team", f"{stem}-admin", f"{stem}-lead", f"{stem}-member"
    platform.create_user(admin, "--admin")
    platform.create_user(lead)
    platform.create_user(member, "--group", group)
    platform.command("budget", "set", "--group", group, "--amount", "10")
    context = browser.new_context(base_url=server.url, viewport=DESKTOP)  # type: ignore[arg-type]
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        sign_in(page, admin)
        page.goto(f"/admin/prices/{PRICED}")
        page.locator("#price-input").fill("1.5")
        page.locator("#price-per_call").fill("0.01")
        page.get_by_role("button", name="Save price").click()
        expect(page.locator("[data-flash='prices.saved']")).to_be_visible()
        expect(page.locator("[data-in-force]")).to_contain_text("input 1.5000 per million tokens")
        page.get_by_role("button", name="Remove the price set here").click()
        expect(page.locator("[data-flash='prices.cleared']")).to_be_visible()
        expect(page.locator("[data-in-force]")).to_contain_text("not priced")

        page.goto(f"/admin/groups/{group}")
        page.locator("#member").fill(lead)
        page.locator("#member").press("Enter")
        page.get_by_role("button", name=f"Make administrator {lead}").click()
        expect(page.locator("[data-flash='groups.admin_added']")).to_contain_text(lead)

        sign_in(page, lead)
        page.get_by_role("link", name="My groups").click()
        page.get_by_role("link", name=group).click()
        page.get_by_role("link", name=f"Budget & limits {member}").click()
        page.locator("#m-amount").fill("3")
        page.get_by_role("button", name="Save budget").click()
        expect(page.locator("[data-flash='groups.budget_done']")).to_contain_text(member)
        expect(page.locator("[data-budget-status] [data-spent-money]")).to_contain_text("of 3.00")
        page.get_by_role("button", name="Remove their own budget").click()
        expect(page.locator("[data-no-own-budget]")).to_be_visible()
        assert not errors, errors
    finally:
        context.close()
