"""The portal end to end in headless Chromium: sign in, make a key, use it, see it on the usage
page, revoke it. Screenshots of the main pages are left in test-artifacts/portal/."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.stack import Platform, Server
from tests.test_files import png


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
    expect(page).to_have_url(server.url + "/")


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
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Models").click()
        expect(page.locator('[data-model="mock/chat"]')).to_be_visible()
        shots(page, "models")

        page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys").click()
        expect(page).to_have_url(server.url + "/settings/keys")
        page.get_by_label("Name").fill("notebook")
        page.get_by_role("button", name="Create key").click()
        created = page.locator("#flash-secret")
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
        assert page.locator("#chart-tokens").is_visible()
        legend = page.locator("figure:has(#chart-requests) .legend")
        assert legend.locator("li", has_text="mock/chat").count() == 1
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
        generated = page.locator("#flash-secret").input_value()
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
        expect(page).to_have_url(server.url + "/")
        page.goto("/models")
        expect(page.get_by_role("heading", name="模型", exact=True)).to_be_visible()
        shots(page, "models-zh")
        page.get_by_role("link", name="English").click()
        expect(page.get_by_role("heading", name="Models", exact=True)).to_be_visible()
    finally:
        chinese.close()


def test_files_upload_with_progress_share_a_preview_and_delete(
    browser: Browser,
    server: Server,
    platform: Platform,
    unique: Callable[[str], str],
    shots: Callable[[Page, str], None],
    tmp_path: Path,
) -> None:
    username = unique("portal-files")
    platform.create_user(username)
    picture = tmp_path / "beam profile.png"
    picture.write_bytes(png(64, 48))
    context = browser.new_context(
        locale="en-US", permissions=["clipboard-read", "clipboard-write"], base_url=server.url
    )
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        sign_in(page, server, username)
        page.get_by_role("link", name="Files").click()
        expect(page.get_by_text("You have no files yet.")).to_be_visible()
        page.get_by_label("File to upload").set_input_files(picture)
        page.get_by_role("button", name="Upload", exact=True).click()
        row = page.locator("tr", has_text="beam profile.png")
        expect(row).to_be_visible()
        thumbnail = row.locator("img.thumb")
        expect(thumbnail).to_have_js_property("complete", True)
        assert thumbnail.evaluate("img => img.naturalWidth") == 64
        row.get_by_role("button", name="Copy").click()
        url = page.evaluate("navigator.clipboard.readText()")
        assert re.fullmatch(re.escape(server.url) + r"/apiv2/files/file-[0-9a-f]{32}/preview", url)
        shots(page, "files")

        # The preview URL works for anyone who has it, with no session or key.
        answer = httpx.get(url)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        download = row.get_by_role("link", name="beam profile.png")
        with page.expect_download() as started:
            download.click()
        assert Path(started.value.path()).read_bytes() == picture.read_bytes()

        row.get_by_role("button", name=re.compile("Delete")).click()
        expect(page.get_by_text("You have no files yet.")).to_be_visible()
        assert httpx.get(url).status_code == 404
    finally:
        context.close()


def test_pages_fit_a_phone_screen(
    browser: Browser,
    server: Server,
    platform: Platform,
    unique: Callable[[str], str],
    shots: Callable[[Page, str], None],
) -> None:
    username = unique("portal-phone")
    platform.create_user(username, "--admin")
    context = browser.new_context(
        locale="en-US", base_url=server.url, viewport={"width": 390, "height": 844}
    )
    page = context.new_page()
    try:
        sign_in(page, server, username)
        for path in ("/models", "/usage", "/settings/keys", "/playground"):
            page.goto(path)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} is {overflow}px wider than the phone's screen"
        page.goto("/models")
        shots(page, "models-phone")
    finally:
        context.close()
