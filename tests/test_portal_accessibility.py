"""Accessibility of the portal's pages, checked by axe-core (the engine browsers' own audits
use) in headless Chromium against WCAG 2.1 A and AA: labels, names, contrast, landmarks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page

from tests.stack import Platform, Server
from tests.test_portal_browser import sign_in

PAGES = [
    "/",
    "/models",
    "/models/mock/chat",
    "/usage?days=7",
    "/usage",
    "/files",
    "/knowledge",
    "/playground",
    "/settings/keys",
    "/settings/password",
    "/admin/users",
    "/admin/groups",
    "/admin/providers",
    "/admin/models",
    "/admin/workers",
    "/admin/knowledge",
    "/admin/audit",
]
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}


def violations(page: Page) -> str:
    results = Axe().run(page, options={**WCAG, "resultTypes": ["violations"]})
    return results.generate_report() if results.violations_count else ""


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_every_page_meets_wcag_aa(
    browser: Browser,
    server: Server,
    platform: Platform,
    unique: Callable[[str], str],
    locale: str,
) -> None:
    admin = unique("a11y-admin")
    key = platform.create_user(admin, "--admin")
    store = server.openai(key).vector_stores.create(name="a11y notes").id
    pages = [*PAGES, f"/knowledge/{store}", f"/knowledge/{store}?q=muons"]
    # axe is injected as a script, which the portal's own policy (script-src 'self') forbids.
    context = browser.new_context(locale=locale, base_url=server.url, bypass_csp=True)
    page = context.new_page()
    try:
        page.goto("/login")
        found = {"/login": violations(page)}
        sign_in(page, server, admin) if locale == "en-US" else sign_in_zh(page, server, admin)
        for path in pages:
            page.goto(path)
            found[path] = violations(page)
        # The avatar menu open, as a keyboard user opens it.
        page.goto("/models")
        page.locator("details.avatar summary").focus()
        page.keyboard.press("Enter")
        found["/models (menu open)"] = violations(page)
    finally:
        context.close()
    failing = {path: report for path, report in found.items() if report}
    assert not failing, "\n\n".join(f"{path}:\n{report}" for path, report in failing.items())


def sign_in_zh(page: Page, server: Server, username: str) -> None:
    page.goto("/login")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill("a-password")
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(server.url + "/")
