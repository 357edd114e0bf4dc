"""The knowledge-base pages in headless Chromium, in English at desktop width and in Chinese at
phone width: make a store, upload a document, watch it complete, search it, delete it; no
refresh repeats a form, no page is wider than a phone, axe finds nothing, and another user
gets the 404 page."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect

from tests.stack import UPSTREAM_KEY, Platform, Server, mock_upstream

pytestmark = [pytest.mark.e2e]

DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}
#: What each language's run types and expects to see.
WORDS = {
    "en": {
        "nav": "Knowledge",
        "name": "Name",
        "create": "Create",
        "created": "Knowledge base “beam notes” created.",
        "upload": "Upload a new file",
        "upload_button": "Upload and add",
        "uploaded": "“beam-notes.md” uploaded and added",
        "ready": "Ready",
        "question": "Question",
        "search": "Search",
        "query": "cosmic muons calibration",
        "found": "passages found.",
        "delete": "Delete",
        "deleted": "Knowledge base “beam notes” deleted.",
        "not_found": "404",
    },
    "zh": {
        "nav": "知识库",
        "name": "名称",
        "create": "新建",
        "created": "已新建知识库“beam notes”",
        "upload": "上传新文件",
        "upload_button": "上传并添加",
        "uploaded": "已上传并添加“beam-notes.md”",
        "ready": "可用",
        "question": "问题",
        "search": "检索",
        "query": "宇宙线缪子刻度",
        "found": "个段落。",
        "delete": "删除",
        "deleted": "已删除知识库“beam notes”。",
        "not_found": "404",
    },
}
DOCUMENT = """# Beam test notes

## Calibration

The calorimeter was calibrated with cosmic muons before the beam arrived.

## 刻度

量能器在束流到来之前使用宇宙线缪子进行刻度。
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, Server]]:
    """A platform whose knowledge bases embed with the mock upstream's embedding model."""
    folder = tmp_path_factory.mktemp("kb-browser")
    with mock_upstream("--api-key", UPSTREAM_KEY) as mock:
        config = folder / "providers.yaml"
        config.write_text(
            "providers:\n  - name: mock\n"
            f"    base_url: {mock.url}/v1\n    api_key_env: MOCK_KEY\n    models:\n"
            "      - {id: mock/chat, upstream: chat-upstream}\n"
            "      - {id: mock/embed, type: embedding, upstream: embed-upstream}\n"
        )
        platform = Platform(
            data_dir=folder,
            database_url=None,
            config=config,
            extra_env={"HEPAI_SERVER_KNOWLEDGE_EMBEDDING_MODEL": "mock/embed"},
        )
        platform.cli("db", "upgrade")
        with platform.serve() as server:
            yield platform, server


def count(platform: Platform, table: str, username: str) -> int:
    engine = sa.create_engine(platform.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    sa.text(
                        f"SELECT count(*) FROM {table} t JOIN users u ON u.id = t.user_id "
                        "WHERE u.username = :name"
                    ),
                    {"name": username},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def sign_in(page: Page, username: str) -> None:
    page.goto("/login")
    page.locator("#username").fill(username)
    page.locator("#password").fill("a-password")
    page.locator("form[action='/login'] button[type=submit]").click()
    page.wait_for_url(re.compile(r"^(?!.*/login).*$"))


def run_snippet(code: str, key: str) -> str:
    """What the code prints, run with ``HEPAI_API_KEY`` set as its users set it."""
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("HEPAI_API_KEY", key)
        exec(compile(code, "<snippet>", "exec"), {})  # the page's own code, as a user runs it
    return printed.getvalue()


def fits_and_passes_axe(page: Page) -> None:
    """At desktop and phone width: nothing wider than the screen, no axe violations."""
    for viewport in (DESKTOP, PHONE):
        page.set_viewport_size(viewport)  # type: ignore[arg-type]
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{page.url} is {overflow}px too wide at {viewport['width']}px"
        results = Axe().run(page, options={**WCAG, "resultTypes": ["violations"]})
        assert not results.violations_count, results.generate_report()


@pytest.mark.parametrize(("lang", "viewport"), [("en", DESKTOP), ("zh", PHONE)])
def test_a_knowledge_base_is_made_filled_searched_and_deleted_in_the_portal(
    browser: Browser,
    stack: tuple[Platform, Server],
    tmp_path: Path,
    lang: str,
    viewport: dict[str, int],
) -> None:
    platform, server = stack
    words = WORDS[lang]
    owner, other = f"kb-owner-{lang}", f"kb-other-{lang}"
    key = platform.create_user(owner)
    platform.create_user(other)
    document = tmp_path / "beam-notes.md"
    document.write_text(DOCUMENT, encoding="utf-8")
    # axe is injected as a script, which the portal's own policy (script-src 'self') forbids.
    context = browser.new_context(
        locale="zh-CN" if lang == "zh" else "en-US",
        base_url=server.url,
        viewport=viewport,  # type: ignore[arg-type]
        bypass_csp=True,
    )
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        sign_in(page, owner)
        page.get_by_role("link", name=words["nav"], exact=True).click()
        page.get_by_label(words["name"], exact=True).fill("beam notes")
        page.get_by_role("button", name=words["create"], exact=True).click()
        page.wait_for_url(re.compile(r"/knowledge/vs_[0-9a-f]{32}$"))
        store_url = page.url
        expect(page.get_by_role("status").filter(has_text=words["created"])).to_be_visible()
        page.reload()
        assert count(platform, "vector_stores", owner) == 1
        expect(page.get_by_text(words["created"])).to_have_count(0)

        page.get_by_label(words["upload"]).set_input_files(document)
        page.get_by_role("button", name=words["upload_button"]).click()
        expect(page.get_by_role("status").filter(has_text=words["uploaded"])).to_be_visible()
        row = page.locator("tr[data-store-file]", has_text="beam-notes.md")
        # The page follows ingestion by itself and reloads once it is done.
        expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
        expect(row.get_by_text(words["ready"], exact=True)).to_be_visible()
        page.reload()
        assert count(platform, "vector_store_files", owner) == 1
        assert count(platform, "files", owner) == 1

        page.get_by_label(words["question"], exact=True).fill(words["query"])
        page.get_by_role("button", name=words["search"], exact=True).click()
        expect(page.get_by_text(words["found"])).to_be_visible()
        hit = page.locator("[data-hit]").first
        expect(hit).to_contain_text("beam-notes.md")
        expect(hit).to_contain_text("宇宙线缪子" if lang == "zh" else "cosmic muons")
        expect(hit.locator("[data-score]")).to_have_text(re.compile(r"\d\.\d{3}"))
        fits_and_passes_axe(page)
        # The code the page shows runs as it is, with the user's key, and finds the passage.
        for tab in ("openai", "hepai"):
            code = page.locator(f"[data-snippet='{tab}'] code").text_content() or ""
            assert words["query"] in code, code
            assert "beam-notes.md" in run_snippet(code, key), tab
        page.goto("/knowledge")
        expect(page.locator("tr[data-store]", has_text="beam notes")).to_be_visible()
        fits_and_passes_axe(page)

        stranger = browser.new_context(base_url=server.url)
        try:
            visitor = stranger.new_page()
            sign_in(visitor, other)
            answer = visitor.goto(store_url)
            assert answer is not None and answer.status == 404
            visitor.goto("/knowledge")
            expect(visitor.locator("tr[data-store]")).to_have_count(0)
        finally:
            stranger.close()

        page.goto(store_url)
        page.locator("form[action$='/delete'] button").last.click()
        page.wait_for_url(server.url + "/knowledge")
        expect(page.get_by_role("status").filter(has_text=words["deleted"])).to_be_visible()
        page.reload()
        assert count(platform, "vector_stores", owner) == 0
        assert errors == []
    finally:
        context.close()
