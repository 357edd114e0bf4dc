"""The public preview URL: an image shows in a plain <img src> without a key; uploaded HTML and
SVG never run script, proven in a real headless Chromium against a beacon that records every
request a script would make."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from tests.stack import Platform, Server
from tests.test_files import png


class Beacon:
    """A loopback HTTP server that records the paths requested from it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        beacon = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                beacon.hits.append(self.path)
                body = b""
                if self.path == "/control.html":
                    body = attack("control", beacon.url).encode()
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Beacon:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script_hits(self) -> list[str]:
        return [hit for hit in self.hits if hit.startswith("/hit/")]


def attack(tag: str, beacon: str) -> str:
    """HTML whose script, if it ever runs, reports to the beacon three ways."""
    return (
        f"<!doctype html><html><head><title>{tag}</title></head><body>"
        f"<script>new Image().src='{beacon}/hit/{tag}-img';"
        f"fetch('{beacon}/hit/{tag}-fetch').catch(()=>{{}});"
        f"document.title='pwned';</script>"
        f"<img src=x onerror=\"new Image().src='{beacon}/hit/{tag}-onerror'\">"
        f"</body></html>"
    )


def svg_attack(beacon: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" '
        f"onload=\"new Image().src='{beacon}/hit/svg-onload'\">"
        f"<script>new Image().src='{beacon}/hit/svg-script'</script>"
        f'<rect width="10" height="10" fill="red"/></svg>'
    )


@pytest.fixture
def beacon() -> Iterator[Beacon]:
    with Beacon() as running:
        yield running


@pytest.fixture
def owner(platform: Platform, unique: Callable[[str], str]) -> str:
    return platform.create_user(unique("sharer"))


def preview(server: Server, key: str, name: str, content: bytes, claimed: str) -> str:
    created = server.openai(key).files.create(file=(name, content, claimed), purpose="user_data")
    url = created.model_extra["preview_url"]  # type: ignore[index]
    assert url == f"{server.base_url}/files/{created.id}/preview"
    return str(url)


def test_png_preview_shows_inline_without_a_key(
    server: Server, owner: str, browser: Browser, tmp_path: Path
) -> None:
    image = png(4, 3)
    # The uploader's claims (name, type) are ignored: the bytes say PNG.
    url = preview(server, owner, "cover.html", image, "text/html")
    response = httpx.get(url)  # no Authorization header
    assert response.status_code == 200 and response.content == image
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"].startswith("inline;")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]
    revalidated = httpx.get(url, headers={"if-none-match": response.headers["etag"]})
    assert revalidated.status_code == 304

    page = browser.new_page()
    try:
        page.set_content(f'<img id="shown" src="{url}">')
        page.wait_for_function("document.getElementById('shown').complete")
        size = page.evaluate("[shown.naturalWidth, shown.naturalHeight]")
        assert size == [4, 3]
        page.screenshot(path=str(tmp_path / "png-preview.png"))
    finally:
        page.close()


def test_html_and_svg_previews_run_no_script(
    server: Server, owner: str, browser: Browser, beacon: Beacon
) -> None:
    html_url = preview(server, owner, "page.html", attack("html", beacon.url).encode(), "text/html")
    svg_url = preview(server, owner, "logo.svg", svg_attack(beacon.url).encode(), "image/svg+xml")
    disguised = preview(
        server, owner, "photo.png", attack("disguised", beacon.url).encode(), "image/png"
    )
    for url in (html_url, svg_url, disguised):
        headers = httpx.get(url).headers
        assert headers["content-type"] == "application/octet-stream"
        assert headers["content-disposition"].startswith("attachment;")
        assert headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in headers["content-security-policy"]

    context = browser.new_context(accept_downloads=True)
    try:
        page = context.new_page()
        # The harness itself detects script: the same attack served as a page does report.
        page.goto(beacon.url + "/control.html")
        page.wait_for_function("document.title === 'pwned'")
        assert any(hit.startswith("/hit/control") for hit in beacon.script_hits())
        beacon.hits.clear()

        # Embedded every way a page might show them...
        page.set_content(
            f'<iframe src="{html_url}"></iframe><iframe src="{svg_url}"></iframe>'
            f'<img src="{svg_url}"><object data="{svg_url}"></object>'
            f'<embed src="{svg_url}"><iframe src="{disguised}"></iframe>'
        )
        page.wait_for_load_state("load")
        page.wait_for_timeout(500)  # give any script that did start time to report
        assert beacon.script_hits() == []
        # ...and opened directly: the browser downloads instead of rendering.
        for url in (html_url, svg_url, disguised):
            with page.expect_download(timeout=10_000) as download:
                try:
                    page.goto(url)
                except Exception as exc:  # Chromium reports a download as an aborted navigation
                    assert "ERR_ABORTED" in str(exc) or "Download is starting" in str(exc)
            assert download.value.url == url
        page.wait_for_timeout(500)  # give any script that did start time to report
        assert beacon.script_hits() == []
    finally:
        context.close()


def test_preview_of_a_deleted_file_is_gone(server: Server, owner: str) -> None:
    url = preview(server, owner, "gone.png", png(), "image/png")
    file_id = url.split("/")[-2]
    assert httpx.get(url).status_code == 200
    server.openai(owner).files.delete(file_id)
    response = httpx.get(url)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    assert httpx.get(url.replace(file_id, "file-" + "f" * 32)).text == response.text.replace(
        file_id, "file-" + "f" * 32
    )
