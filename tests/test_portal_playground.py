"""The playground in headless Chromium: a streamed chat with its reasoning shown apart, an image
sent to a vision model, embeddings, rerank, and a document converted by the markitdown worker;
all with the session, no API key in the page, and each call in the user's usage."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Route, expect

from tests import documents
from tests.portal import Visitor, csrf_token
from tests.stack import MockProcess, Platform, Server, run_worker
from tests.test_files import png
from tests.test_portal_browser import sign_in
from tests.test_portal_usage import wait_for_rows


@pytest.fixture(scope="module")
def markitdown(server: Server, operator: str) -> Iterator[str]:
    with run_worker(server, operator, "builtin:markitdown", timeout=120):
        yield "hepai/markitdown"


def with_mock_reasoning(route: Route) -> None:
    """Ask the mock upstream to think aloud, as a reasoning model does."""
    body = json.loads(route.request.post_data or "{}")
    route.continue_(post_data=json.dumps({**body, "mock": {"reasoning": True}}))


def test_the_playground_streams_chat_embeds_ranks_and_converts(
    browser: Browser,
    server: Server,
    platform: Platform,
    mock: MockProcess,
    markitdown: str,
    unique: Callable[[str], str],
    artifacts: Path,
    tmp_path: Path,
) -> None:
    username = unique("player")
    platform.create_user(username)
    picture = tmp_path / "plot.png"
    picture.write_bytes(png(8, 8))
    report = tmp_path / "report.docx"
    report.write_bytes(documents.docx())
    context = browser.new_context(locale="en-US", base_url=server.url)
    page = context.new_page()
    sent: list[dict[str, object]] = []
    page.on(
        "request",
        lambda request: (
            sent.append(dict(request.headers)) if "/playground/v1" in request.url else None
        ),
    )
    page.route("**/playground/v1/chat/completions", with_mock_reasoning)
    try:
        sign_in(page, server, username)
        page.get_by_role("link", name="Playground").click()
        expect(page).to_have_url(server.url + "/playground")

        chat = page.locator("#chat-form")
        chat.get_by_label("Model", exact=True).select_option("mock/chat")
        chat.get_by_label("Message").fill("What does this plot show?")
        chat.get_by_label("Image (for vision models)").set_input_files(picture)
        chat.get_by_role("button", name="Send").click()
        answer = page.locator(".turn.assistant .content").last
        expect(answer).to_have_text(re.compile(r"^word0 word1 word2 word3 word4\s*$"))
        reasoning = page.locator(".turn.assistant .reasoning").last
        expect(reasoning).to_be_visible()
        expect(reasoning).to_contain_text("thinking it over")
        expect(page.locator("#chat-status")).to_contain_text("tokens")
        upstream = [r for r in mock.requests() if r["body"].get("model") == "chat-upstream"][-1]
        content = upstream["body"]["messages"][-1]["content"]
        assert content[0] == {"type": "text", "text": "What does this plot show?"}
        assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")

        # A second turn carries the conversation.
        chat.get_by_label("Message").fill("And then?")
        chat.get_by_role("button", name="Send").click()
        expect(page.locator(".turn.assistant .content")).to_have_count(2)
        expect(page.locator(".turn.assistant .content").last).to_contain_text("word4")
        upstream = [r for r in mock.requests() if r["body"].get("model") == "chat-upstream"][-1]
        assert [m["role"] for m in upstream["body"]["messages"]] == ["user", "assistant", "user"]

        embed = page.locator("#embed-form")
        embed.get_by_label("Texts, one per line (compared with the first)").fill(
            "muon detector\ncalorimeter\nmuon detector"
        )
        embed.get_by_role("button", name="Embed").click()
        scores = page.locator("#embed-result tbody td.num")
        expect(scores).to_have_count(3)
        assert scores.all_inner_texts()[0] == "1.000" and scores.all_inner_texts()[2] == "1.000"

        rerank = page.locator("#rerank-form")
        rerank.get_by_label("Query").fill("muon")
        rerank.get_by_label("Documents, one per line").fill("muon tracks\nlunch menu")
        rerank.get_by_role("button", name="Rank").click()
        expect(page.locator("#rerank-result li")).to_have_count(2)

        convert = page.locator("#convert-form")
        convert.get_by_label("Model", exact=True).select_option(markitdown)
        convert.get_by_label("Document (PDF, Office, image)").set_input_files(report)
        convert.get_by_role("button", name="Convert").click()
        markdown = page.locator("#convert-result")
        expect(markdown).to_be_visible(timeout=60_000)
        expect(markdown).to_contain_text("# Quarterly Detector Report")
        page.screenshot(path=artifacts / "portal" / "playground.png", full_page=True)
    finally:
        context.close()

    # Every call went with the session and its CSRF header, never a key.
    assert sent and all("authorization" not in headers for headers in sent)
    assert all(headers.get("x-csrf-token") for headers in sent)
    wait_for_rows(platform, username, 5)


def test_playground_calls_need_the_session_and_its_token(
    server: Server, platform: Platform, unique: Callable[[str], str]
) -> None:
    username = unique("player")
    platform.create_user(username)
    body = {"model": "mock/chat", "messages": [{"role": "user", "content": "hi"}]}
    url = server.url + "/playground/v1/chat/completions"
    anonymous = httpx.post(url, json=body)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "authentication_error"
    with Visitor(server.url) as visitor:
        visitor.sign_in(username)
        token = csrf_token(visitor.get("/playground").text)
        assert visitor.client.post(url, json=body).status_code == 403
        assert visitor.client.post(url, json=body, headers={"x-csrf-token": "x"}).status_code == 403
        foreign = visitor.client.post(
            url, json=body, headers={"x-csrf-token": token, "origin": "http://evil.example"}
        )
        assert foreign.status_code == 403
        accepted = visitor.client.post(url, json=body, headers={"x-csrf-token": token})
        assert accepted.status_code == 200
        assert accepted.json()["choices"][0]["message"]["content"]
