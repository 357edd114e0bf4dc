"""The portal's second pass in headless Chromium (issue 17), on a platform of its own: forms
that redirect and never repeat, the home page's first steps, the model catalogue's code tabs,
usage that explains itself, the playground, phone-sized pages in both languages, and the
admin's grants, groups, users and audit log."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import sqlalchemy as sa
from axe_playwright_python.sync_playwright import Axe
from hepai import HepAI
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from tests.conftest import CHROMIUM
from tests.stack import (
    UPSTREAM_KEY,
    Platform,
    Server,
    free_port,
    mock_upstream,
    our_worker,
)

#: The platform here is real processes (a server, the mock upstream), whatever fixtures say.
pytestmark = [pytest.mark.e2e]

DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, Server]]:
    """A platform on SQLite with a working provider, one whose upstream is down, and models
    that say what they can do."""
    folder = tmp_path_factory.mktemp("console")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with mock_upstream("--api-key", UPSTREAM_KEY) as mock:
        config = folder / "providers.yaml"
        config.write_text(
            f"""
providers:
  - name: mock
    base_url: {mock.url}/v1
    api_key_env: MOCK_KEY
    models:
      - {{id: mock/chat, upstream: chat-upstream, context_length: 131072,
          capabilities: [vision, tools]}}
      - {{id: mock/thinker, upstream: chat-upstream, capabilities: [reasoning]}}
      - {{id: mock/priced, upstream: chat-upstream, price: {{input: 2, output: 8}}}}
      - {{id: mock/embed, type: embedding, upstream: embed-upstream}}
  - name: down
    base_url: {dead}
    models:
      - {{id: down/chat}}
"""
        )
        platform = Platform(data_dir=folder, database_url=None, config=config)
        platform.cli("db", "upgrade")
        with platform.serve() as server:
            yield platform, server


@pytest.fixture(scope="module")
def platform_(stack: tuple[Platform, Server]) -> Platform:
    return stack[0]


@pytest.fixture(scope="module")
def server_(stack: tuple[Platform, Server]) -> Server:
    return stack[1]


_count = iter(range(10_000))


def fresh(stem: str) -> str:
    return f"{stem}-{next(_count)}-{time.monotonic_ns() % 100_000}"


def context_for(
    browser: Browser,
    server: Server,
    *,
    lang: str = "en",
    viewport: dict[str, int] = DESKTOP,
    **options: object,
) -> BrowserContext:
    return browser.new_context(
        locale="zh-CN" if lang == "zh" else "en-US",
        base_url=server.url,
        viewport=viewport,  # type: ignore[arg-type]
        timezone_id="Asia/Shanghai",
        **options,  # type: ignore[arg-type]
    )


def sign_in(page: Page, username: str, *, next_path: str = "") -> None:
    page.goto("/login" + (f"?next={next_path}" if next_path else ""))
    page.locator("#username").fill(username)
    page.locator("#password").fill("a-password")
    page.locator("form[action='/login'] button[type=submit]").click()
    page.wait_for_url(re.compile(r"^(?!.*/login).*$"))


def rows(platform: Platform, sql: str, **values: object) -> list[dict[str, object]]:
    engine = sa.create_engine(platform.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(sa.text(sql), values)]
    finally:
        engine.dispose()


def wait_for_usage(platform: Platform, username: str, count: int) -> None:
    deadline = time.monotonic() + 15
    sql = (
        "SELECT count(*) AS n FROM usage_records r JOIN users u ON u.id = r.user_id "
        "WHERE u.username = :name"
    )
    while rows(platform, sql, name=username)[0]["n"] < count:
        assert time.monotonic() < deadline, "the usage rows never arrived"
        time.sleep(0.1)


def overflow(page: Page) -> int:
    return int(
        page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    )


def test_refresh_and_back_after_a_form_neither_repeat_it_nor_show_its_secret_again(
    browser: Browser, platform_: Platform, server_: Server
) -> None:
    username, admin, member = fresh("prg-user"), fresh("prg-admin"), fresh("prg-member")
    platform_.create_user(username)
    platform_.create_user(admin, "--admin")
    context = context_for(browser, server_)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        sign_in(page, username)
        page.goto("/settings/keys")
        page.get_by_label("Name").fill("laptop")
        page.get_by_role("button", name="Create key").click()
        expect(page).to_have_url(server_.url + "/settings/keys")
        secret = page.locator("#flash-secret").input_value()
        assert secret.startswith("sk-")
        expect(page.get_by_role("status").first).to_contain_text("laptop")
        page.reload()
        expect(page.locator("#flash-secret")).to_have_count(0)
        assert secret not in page.content()
        page.goto("/models")
        page.go_back()
        expect(page.locator("#flash-secret")).to_have_count(0)
        assert secret not in page.content()
        keys = rows(
            platform_,
            "SELECT k.name FROM api_keys k JOIN users u ON u.id = k.user_id WHERE u.username = :n",
            n=username,
        )
        assert sorted(key["name"] for key in keys) == ["default", "laptop"]  # one made here

        revoke = page.locator("tr", has_text="laptop").get_by_role("button", name=re.compile("Rev"))
        revoke.click()
        expect(page.locator("[data-flash='keys.revoked_notice']")).to_contain_text("laptop")
        page.reload()
        expect(page.locator("[data-flash]")).to_have_count(0)
    finally:
        context.close()

    context = context_for(browser, server_)
    page = context.new_page()
    try:
        sign_in(page, admin)
        page.goto("/admin/users")
        form = page.locator("form[action='/admin/users']")
        form.get_by_label("Username").fill(member)
        form.get_by_label("Groups").fill("optics")
        form.get_by_role("button", name="Create user").click()
        password = page.locator("#flash-secret").input_value()
        assert len(password) >= 16
        page.reload()
        page.go_back()
        page.go_forward()
        assert password not in page.content()
        assert len(rows(platform_, "SELECT id FROM users WHERE username = :n", n=member)) == 1

        # A refused form keeps what was typed, and says why in the page's language.
        form = page.locator("form[action='/admin/users']")
        form.get_by_label("Username").fill(member)
        form.get_by_label("E-mail").fill("kept@example.org")
        form.get_by_role("button", name="Create user").click()
        expect(page.get_by_role("alert")).to_contain_text(f"The user {member} exists already")
        expect(page.locator("#new-email")).to_have_value("kept@example.org")
    finally:
        context.close()


def test_a_new_user_is_shown_first_steps_until_a_key_then_a_dashboard(
    browser: Browser, platform_: Platform, server_: Server
) -> None:
    username = fresh("newcomer")
    platform_.cli("user", "create", username, input="a-password\n")
    context = context_for(browser, server_, lang="zh")
    page = context.new_page()
    try:
        sign_in(page, username)
        expect(page).to_have_url(server_.url + "/")
        first = page.locator("[data-first-run]")
        expect(first).to_contain_text("创建你的第一个 API 密钥")
        nav = page.get_by_role("navigation", name="主导航")
        expect(nav.get_by_role("link", name="API 密钥")).to_be_visible()
        first.get_by_role("link", name="创建密钥").click()
        page.get_by_role("button", name="创建密钥").click()
        secret = page.locator("#flash-secret").input_value()

        client = server_.openai(secret)
        hello = [{"role": "user", "content": "hi"}]
        client.chat.completions.create(model="mock/chat", messages=hello)  # type: ignore[arg-type]
        with pytest.raises(openai.APIStatusError):  # the upstream is down: a 5xx to list
            client.chat.completions.create(model="down/chat", messages=hello)  # type: ignore[arg-type]
        wait_for_usage(platform_, username, 2)
        page.goto("/")
        expect(page.locator("[data-first-run]")).to_have_count(0)
        expect(page.locator("[data-stat='requests-today']")).to_have_text("2")
        expect(page.locator("[data-top-model='mock/chat']")).to_be_visible()
        failed = page.locator("#recent-errors ~ .table-wrap tr[data-request]")
        expect(failed).to_have_count(1)
        expect(failed).to_contain_text("down/chat")
        expect(page.locator("footer [data-zone]")).to_contain_text("Asia/Shanghai")
        # A model whose upstream failed says so in the catalogue.
        page.goto("/models")
        expect(page.locator("tr[data-model='down/chat'] [data-status]")).to_have_attribute(
            "data-status", "failing"
        )
        vision = page.locator("tr[data-model='mock/chat'] [data-capability='vision']")
        expect(vision).to_be_visible()
    finally:
        context.close()


def test_a_models_code_comes_in_three_tabs_that_copy_or_select_where_there_is_no_clipboard(
    browser: Browser, platform_: Platform, server_: Server
) -> None:
    username = fresh("coder")
    platform_.create_user(username)
    context = context_for(browser, server_, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    try:
        sign_in(page, username, next_path="/models/mock/chat")
        tabs = page.get_by_role("tab")
        expect(tabs).to_have_text(["curl", "Python (openai)", "hepai"])
        curl = page.get_by_role("tabpanel")
        expect(curl).to_have_count(1)
        expect(curl).to_contain_text(f"curl {server_.url}/apiv2/chat/completions")
        tabs.first.focus()
        page.keyboard.press("ArrowRight")
        expect(tabs.nth(1)).to_have_attribute("aria-selected", "true")
        openai_panel = page.locator("[data-snippet='openai']")
        expect(openai_panel).to_be_visible()
        code = openai_panel.locator("code")
        # Full width: the longest line is not cut.
        assert code.evaluate("e => e.scrollWidth <= e.parentElement.clientWidth + 1")
        openai_panel.get_by_role("button", name=re.compile("Copy")).click()
        copied = page.evaluate("navigator.clipboard.readText()")
        assert copied == code.inner_text() and 'model="mock/chat"' in copied
    finally:
        context.close()

    # An intranet host name over plain HTTP has no clipboard API: the text is selected instead.
    insecure = browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--host-resolver-rules=MAP portal.intranet 127.0.0.1"],
    )
    try:
        context = insecure.new_context(base_url=f"http://portal.intranet:{server_.port}")
        page = context.new_page()
        sign_in(page, username, next_path="/models/mock/embed")
        assert page.evaluate("window.isSecureContext") is False
        page.locator("[data-snippet='curl'] button").click()
        expect(page.locator("#copy-hint")).to_contain_text("Ctrl+C")
        selected = page.evaluate("String(window.getSelection())")
        assert selected.startswith("curl ") and "mock/embed" in selected
        context.close()
    finally:
        insecure.close()


def test_usage_charts_are_readable_and_explained_with_a_request_log(
    browser: Browser, platform_: Platform, server_: Server
) -> None:
    username, admin = fresh("measured"), fresh("overseer")
    key = platform_.create_user(username)
    platform_.create_user(admin, "--admin")
    client = server_.openai(key)
    for model in ("mock/chat", "mock/chat", "mock/thinker"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    wait_for_usage(platform_, username, 3)
    request_id = rows(
        platform_,
        "SELECT request_id FROM usage_records r JOIN users u ON u.id = r.user_id "
        "WHERE u.username = :n ORDER BY r.id DESC",
        n=username,
    )[0]["request_id"]
    for viewport in (DESKTOP, PHONE):
        context = context_for(browser, server_, viewport=viewport)
        page = context.new_page()
        try:
            sign_in(page, username, next_path="/usage?days=7")
            chart = page.locator("figure:has(#chart-requests)")
            sizes = chart.locator("text").evaluate_all(
                "texts => texts.filter(t => getComputedStyle(t).display !== 'none')"
                ".map(t => parseFloat(getComputedStyle(t).fontSize))"
            )
            assert sizes and min(sizes) >= 11, sizes
            today = chart.locator(".col").last
            expect(chart.locator("text").last).to_be_visible()  # today's date is labelled
            assert today.locator("rect[class^='s']").count() == 2  # stacked by model
            today.hover()
            tip = page.locator("#tooltip")
            expect(tip).to_be_visible()
            expect(tip).to_contain_text("mock/chat: 2")
            page.mouse.move(0, 0)
            today.focus()
            expect(tip).to_contain_text("Total: 3")
            expect(chart.locator("ul.legend")).to_contain_text("mock/thinker")
            log = page.locator(f"tr[data-request='{request_id}']")
            expect(log).to_contain_text("mock/thinker")
            expect(log).to_contain_text("200")
            expect(page.locator("#keys-table")).to_contain_text("default")
            assert overflow(page) <= 0
        finally:
            context.close()

    context = context_for(browser, server_)
    page = context.new_page()
    try:
        sign_in(page, admin, next_path="/usage")
        page.get_by_role("link", name="Users and groups").click()
        expect(page.locator("#users-table")).to_contain_text(username)
        page.goto("/usage")
        page.locator("#from").fill("2020-01-01")
        page.get_by_role("button", name="Show these days").click()
        expect(page.locator("[data-range]")).to_have_attribute(
            "data-range", re.compile(r"^\d{4}-\d\d-\d\d\.\.")
        )
        page.goto("/usage?errors=1")
        expect(page.locator(f"tr[data-request='{request_id}']")).to_have_count(0)
    finally:
        context.close()


def reply_with(markdown: str) -> Callable[[Route], None]:
    """A chat answer streamed by the test itself, so the page's rendering is what is tried."""

    def fulfil(route: Route) -> None:
        chunks = [markdown[i : i + 7] for i in range(0, len(markdown), 7)]
        events = "".join(
            "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": part}}]}) + "\n\n"
            for part in chunks
        )
        body = events + "data: [DONE]\n\n"
        route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=body)

    return fulfil


def slowly(route: Route) -> None:
    body = json.loads(route.request.post_data or "{}")
    route.continue_(post_data=json.dumps({**body, "mock": {"chunks": 60, "delay": 0.25}}))


def test_the_playground_sends_on_enter_stops_renders_markdown_and_compares(
    browser: Browser, platform_: Platform, server_: Server
) -> None:
    username = fresh("chatter")
    platform_.create_user(username)
    context = context_for(browser, server_)
    page = context.new_page()
    sent: list[dict[str, object]] = []
    page.on(
        "request",
        lambda r: (
            sent.append(json.loads(r.post_data or "{}"))
            if r.url.endswith("/playground/v1/chat/completions")
            else None
        ),
    )
    try:
        sign_in(page, username, next_path="/playground")
        prompt = page.locator("#chat-prompt")
        page.locator("#chat-model").select_option("mock/chat")
        page.locator("summary", has_text="System prompt").click()
        page.locator("#chat-system").fill("Answer briefly.")
        page.locator("#chat-temperature").fill("0.2")
        page.route("**/playground/v1/chat/completions", slowly)
        prompt.fill("first line")
        prompt.press("Shift+Enter")
        prompt.type("second line")
        assert prompt.input_value() == "first line\nsecond line"
        prompt.press("Enter")
        expect(page.locator("#chat-send")).to_be_disabled()
        expect(page.locator(".turn.assistant .content").last).to_contain_text("word0")
        page.get_by_role("button", name="Stop").click()
        expect(page.locator(".turn.assistant").last).to_contain_text("Stopped.")
        expect(page.locator("#chat-send")).to_be_enabled()
        assert sent[-1]["messages"] == [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "first line\nsecond line"},
        ]
        assert sent[-1]["temperature"] == 0.2

        page.unroute("**/playground/v1/chat/completions")
        formula = "Energy: $E = mc^2$ and\n\n```python\nprint('hi')\n```\n\n**done**"
        page.route("**/playground/v1/chat/completions", reply_with(formula))
        page.locator("#compare-model").select_option("mock/thinker")
        prompt.fill("Explain")
        prompt.press("Enter")
        answers = page.locator(".turn.assistant .content")
        expect(answers).to_have_count(3)
        last = answers.last
        expect(last.locator(".katex")).to_have_count(1)
        expect(last.locator("pre code.language-python .hljs-built_in")).to_have_text("print")
        expect(last.locator("strong")).to_have_text("done")
        expect(page.locator("#conversation-2 .turn.assistant")).to_have_count(1)
        assert {body["model"] for body in sent[-2:]} == {"mock/chat", "mock/thinker"}

        page.get_by_role("button", name="View as code").click()
        curl = page.locator("#request-code-curl")
        expect(curl).to_contain_text('"Answer briefly."')
        expect(curl).to_contain_text(f"{server_.url}/apiv2/chat/completions")
    finally:
        context.close()


PAGES = [
    "/",
    "/models",
    "/models/mock/chat",
    "/playground",
    "/usage",
    "/settings/keys",
    "/files",
    "/knowledge",
    "/settings/password",
    "/admin/users",
    "/admin/groups",
    "/admin/providers",
    "/admin/models",
    "/admin/workers",
    "/admin/knowledge",
    "/admin/audit",
]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_page_fits_a_phone_and_meets_wcag_in_both_languages(
    browser: Browser, platform_: Platform, server_: Server, lang: str
) -> None:
    admin = fresh(f"phone-{lang}")
    key = platform_.create_user(admin, "--admin")
    server_.openai(key).chat.completions.create(
        model="mock/chat", messages=[{"role": "user", "content": "a long question " * 5}]
    )
    wait_for_usage(platform_, admin, 1)
    context = context_for(browser, server_, lang=lang, viewport=PHONE, bypass_csp=True)
    page = context.new_page()
    found: dict[str, str] = {}
    try:
        sign_in(page, admin)
        page.goto("/admin/groups")
        page.locator("#group-name").fill(f"group-{lang}")
        page.locator("#group-name").press("Enter")
        for path in [*PAGES, f"/admin/groups/group-{lang}", "/no/such/page"]:
            page.goto(path)
            assert overflow(page) <= 0, f"{path} is wider than a phone"
            expected = "zh-CN" if lang == "zh" else "en"
            assert page.evaluate("document.documentElement.lang") == expected
            results = Axe().run(page, options={**WCAG, "resultTypes": ["violations"]})
            if results.violations_count:
                found[path] = results.generate_report()
        if lang == "zh":
            body = page.locator("main").inner_text()
            assert "页面不存在" in body and "no route" not in body
    finally:
        context.close()
    assert not found, "\n\n".join(f"{path}:\n{report}" for path, report in found.items())


def test_browsers_get_error_pages_and_a_favicon_while_programs_keep_json(server_: Server) -> None:
    import httpx

    page = httpx.get(server_.url + "/nope", headers={"accept": "text/html"})
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "<title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    api = httpx.get(server_.url + "/apiv2/nope", headers={"accept": "text/html"})
    assert api.status_code == 404 and api.json()["error"]["type"] == "not_found_error"
    program = httpx.get(server_.url + "/nope")
    assert program.status_code == 404 and program.json()["error"]["type"] == "not_found_error"
    icon = httpx.get(server_.url + "/favicon.ico", follow_redirects=True)
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")


def test_an_admin_grants_a_worker_tool_to_a_group_and_finds_it_in_the_audit_log(
    browser: Browser, platform_: Platform, server_: Server, tmp_path: Path
) -> None:
    admin, physicist = fresh("grantor"), fresh("physicist")
    admin_key = platform_.create_user(admin, "--admin")
    user_key = platform_.create_user(physicist)
    tool = f"hepai/{fresh('tool')}"
    with our_worker(server_, admin_key, tool, "groups: admins-only"):
        user = HepAI(base_url=server_.base_url, api_key=user_key)
        assert tool not in [model.id for model in user.models.list().data]
        context = context_for(browser, server_)
        page = context.new_page()
        try:
            sign_in(page, admin, next_path="/admin/users")
            page.locator("#user-search").fill(physicist)
            page.locator("#user-search").press("Enter")
            expect(page.locator("[data-total-users]")).to_have_attribute("data-total-users", "1")
            page.locator(f"tr[data-user='{physicist}'] th a").click()
            page.locator("#groups").fill("hep-theory")
            page.get_by_role("button", name="Save", exact=True).click()
            expect(page.locator("[data-flash='admin.user_saved']")).to_be_visible()

            page.goto("/admin/models")
            row = page.locator(f"tr[data-model='{tool}']")
            expect(row).to_contain_text("as its workers declare")
            row.get_by_label("Groups").fill("hep-theory")
            row.get_by_role("button", name=re.compile("^Save")).click()
            expect(page.locator("[data-flash='permissions.saved']")).to_contain_text(tool)

            page.goto("/admin/groups/hep-theory")
            expect(page.locator(f"[data-member='{physicist}']")).to_be_visible()
            expect(page.locator(f"[data-group-model='{tool}']")).to_be_visible()

            page.goto("/admin/audit?action=model.permission")
            event = page.locator("tr[data-action='model.permission']", has_text=tool)
            expect(event).to_contain_text("Set who may use a model")
            expect(event).to_contain_text("groups: hep-theory")
            expect(page.locator("tr[data-action='user.save']")).to_have_count(0)
        finally:
            context.close()
        user = HepAI(base_url=server_.base_url, api_key=user_key)
        assert tool in [model.id for model in user.models.list().data]
        assert user.get_remote_model(tool).add(a=1, b=2) == 3


def test_prices_costs_and_my_budget_show_where_people_look(
    browser: Browser, platform_: Platform, server_: Server
) -> None:
    username = fresh("spender")
    key = platform_.create_user(username)
    platform_.cli("budget", "set", "--user", username, "--amount", "5", "--period", "month")
    reply = server_.openai(key).chat.completions.create(
        model="mock/priced", messages=[{"role": "user", "content": "what does this cost"}]
    )
    assert reply.usage is not None
    wait_for_usage(platform_, username, 1)
    cost = reply.usage.prompt_tokens * 2 / 1e6 + reply.usage.completion_tokens * 8 / 1e6
    context = context_for(browser, server_)
    page = context.new_page()
    try:
        sign_in(page, username, next_path="/models/mock/priced")
        prices = page.locator("[data-prices]")
        expect(prices).to_contain_text("input 2.0000 per million tokens")
        expect(prices).to_contain_text("output 8.0000 per million tokens")
        page.goto("/usage?days=7")
        expect(page.locator("[data-total='cost']")).to_have_text(f"{cost:.4f}")
        page.goto("/")
        budget = page.locator("[data-budget='month']")
        expect(budget).to_contain_text(f"{5 - cost:.2f}")
        expect(budget).to_contain_text("of 5.00")
    finally:
        context.close()
