"""The portal end to end in headless Chromium: sign in, make a key, use it, see it on the usage
page, revoke it. Screenshots of the main pages are left in test-artifacts/portal/."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.stack import Platform, Server

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def shots(artifacts: Path, platform: Platform) -> Callable[[Page, str], None]:
    folder = artifacts / "portal"
    folder.mkdir(exist_ok=True)
    backend = "postgres" if platform.database_url else "sqlite"

    def shoot(page: Page, name: str) -> None:
        page.screenshot(path=folder / f"{name}-{backend}.png", full_page=True)

    return shoot


def sign_in(page: Page, server: Server, username: str) -> None:
    page.goto(server.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("a-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(server.url + "/models")


def test_key_made_in_the_portal_calls_the_api_shows_in_usage_and_dies_on_revoke(
    browser: Browser,
    server: Server,
    platform: Platform,
    unique: Callable[[str], str],
    shots: Callable[[Page, str], None],
) -> None:
    username = unique("portal-user")
    platform.create_user(username)
    context = browser.new_context(
        locale="en-US", permissions=["clipboard-read", "clipboard-write"], base_url=server.url
    )
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        sign_in(page, server, username)
        expect(page.locator('[data-model="mock/chat"]')).to_be_visible()
        shots(page, "models")

        # Settings from the avatar menu, as the user guide describes.
        page.locator("details.avatar summary").click()
        page.get_by_role("link", name="Settings · API keys").click()
        expect(page).to_have_url(server.url + "/settings/keys")
        page.get_by_label("Name").fill("notebook")
        page.get_by_role("button", name="Create key").click()
        created = page.locator("#new-key")
        expect(created).to_have_value(re.compile(r"^sk-"))
        page.get_by_role("button", name="Copy").first.click()
        expect(page.get_by_role("button", name="Copied")).to_be_visible()
        secret = page.evaluate("navigator.clipboard.readText()")
        assert secret == created.input_value()
        shots(page, "key-created")

        client = server.openai(secret)
        reply = client.chat.completions.create(
            model="mock/chat", messages=[{"role": "user", "content": "hello from the portal"}]
        )
        assert reply.choices[0].message.content

        # The batch writer records within a fraction of a second; reload until it has.
        row = page.locator('tr[data-model="mock/chat"] [data-requests]')
        deadline = time.monotonic() + 15
        while True:
            page.goto("/usage")
            if row.count() and row.inner_text() == "1":
                break
            assert time.monotonic() < deadline, "the call never appeared on the usage page"
            time.sleep(0.2)
        assert page.locator('[data-total="requests"]').inner_text() == "1"
        assert page.locator("#chart-requests").is_visible()
        shots(page, "usage")

        page.goto("/settings/keys")
        key_row = page.locator("tr", has_text="notebook")
        expect(key_row).not_to_contain_text("Never used")
        key_row.get_by_role("button", name=re.compile("Revoke")).click()
        expect(page.locator("tr", has_text="notebook")).to_contain_text("Revoked")
        assert secret not in page.content()
        shots(page, "key-revoked")

        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(
                model="mock/chat", messages=[{"role": "user", "content": "after revocation"}]
            )
    finally:
        context.close()


def test_admin_pages_and_chinese_pages_render(
    browser: Browser,
    server: Server,
    platform: Platform,
    unique: Callable[[str], str],
    shots: Callable[[Page, str], None],
) -> None:
    admin = unique("portal-admin")
    platform.create_user(admin, "--admin")
    member = unique("portal-member")
    context = browser.new_context(locale="en-US", base_url=server.url)
    page = context.new_page()
    try:
        sign_in(page, server, admin)
        page.get_by_role("link", name="Admin").click()
        expect(page).to_have_url(server.url + "/admin/users")
        form = page.locator("form[action='/admin/users']")
        form.get_by_label("Username").fill(member)
        form.get_by_label("Groups").fill("physics, students")
        form.get_by_role("button", name="Create user").click()
        expect(page.get_by_role("status")).to_contain_text(member)
        generated = page.locator("#new-password").input_value()
        assert len(generated) >= 16
        expect(page.locator(f'tr[data-user="{member}"]')).to_contain_text("Active")
        shots(page, "admin-users")

        page.get_by_role("link", name="Audit log").click()
        expect(page.locator('tr[data-action="user.create"]', has_text=member)).to_be_visible()
        assert generated not in page.content()
        shots(page, "admin-audit")
    finally:
        context.close()

    chinese = browser.new_context(locale="zh-CN", base_url=server.url)
    page = chinese.new_page()
    try:
        page.goto("/login")
        expect(page.get_by_role("heading", name="登录 HepAI")).to_be_visible()
        page.get_by_label("用户名").fill(member)
        page.get_by_label("密码").fill(generated)
        page.get_by_role("button", name="登录").click()
        expect(page).to_have_url(server.url + "/models")
        expect(page.get_by_role("heading", name="模型", exact=True)).to_be_visible()
        shots(page, "models-zh")
        page.get_by_role("link", name="English").click()
        expect(page.get_by_role("heading", name="Models", exact=True)).to_be_visible()
    finally:
        chinese.close()
