"""Screenshots of the portal's main pages at desktop and phone width, for docs/portal.md.

    PYTHONPATH=src .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Starts a throwaway platform (SQLite, the mock upstream, a month of made-up usage), signs in as
an ordinary user and as an admin in Debian's Chromium, and saves each page as
``NAME-desktop.png`` (1366x900) and ``NAME-phone.png`` (390x844). Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from playwright.sync_api import Page, Route, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.stack import UPSTREAM_KEY, Platform, Server, mock_upstream

from hepai_server.gateway.ledger import UsageRow
from hepai_server.gateway.usage import add_to_daily_totals, insert_rows

CHROMIUM = "/usr/bin/chromium"
SIZES = {"desktop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}
MODELS = ("deepseek-r1", "qwen3-vl", "hep-embed", "glm-4.6")
ANSWER = (
    "The invariant mass of the two muons is\n\n$$m^2 = (E_1 + E_2)^2 - |\\vec p_1 + \\vec p_2|^2$$"
    "\n\nIn Python:\n\n```python\nimport numpy as np\n\ndef mass(e, p):\n"
    "    return np.sqrt(e.sum() ** 2 - (p.sum(axis=0) ** 2).sum())\n```\n\n"
    "so a peak near **91 GeV** is the $Z$ boson."
)


@contextmanager
def platform() -> Iterator[tuple[Platform, Server]]:
    folder = Path(tempfile.mkdtemp(prefix="hepai-shots-"))
    with mock_upstream("--api-key", UPSTREAM_KEY) as mock:
        config = folder / "providers.yaml"
        models = "\n".join(
            f"      - {{id: {m}, upstream: chat-upstream, context_length: 131072,"
            f" capabilities: [{caps}]}}"
            for m, caps in (
                ("deepseek-r1", "reasoning"),
                ("qwen3-vl", "vision, tools"),
                ("glm-4.6", "tools"),
            )
        )
        config.write_text(
            "providers:\n  - name: institute-gpu\n"
            f"    base_url: {mock.url}/v1\n    api_key_env: MOCK_KEY\n    models:\n{models}\n"
            "      - {id: hep-embed, type: embedding, upstream: embed-upstream}\n"
            "      - {id: hep-rerank, type: rerank}\n"
        )
        made = Platform(data_dir=folder, database_url=None, config=config)
        made.cli("db", "upgrade")
        with made.serve() as server:
            yield made, server


def seed(made: Platform) -> None:
    """A month of usage for alice and bob, written as the usage writer writes it."""
    engine = sa.create_engine(made.sqlalchemy_url)
    with engine.connect() as connection:
        found = connection.execute(sa.text("SELECT username, id FROM users")).all()
    ids: dict[str, int] = dict(found)
    rng, now = random.Random(17), datetime.now(UTC)
    rows, created = [], []
    for n in range(1500):
        moment = now - timedelta(seconds=rng.uniform(0, 30 * 86400) ** 1.0)
        prompt, completion = rng.randint(50, 3000), rng.randint(20, 900)
        rows.append(
            UsageRow(
                request_id=f"req-demo-{n:05d}",
                user_id=ids["alice" if rng.random() < 0.6 else "bob"],
                api_key_id=None,
                endpoint="chat.completions",
                model=rng.choice(MODELS),
                deployment=None,
                stream=True,
                status_code=200 if rng.random() < 0.96 else rng.choice((429, 502)),
                error=None,
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cached_tokens=None,
                reasoning_tokens=None,
                pages=None,
                bytes=None,
                usage_estimated=False,
                latency_ms=rng.uniform(300, 4000),
                ttft_ms=None,
                cost_nanos=prompt * 2000 + completion * 8000,  # 2 and 8 per million tokens
                budgets=None,
                client_request_id=None,
                created_at=moment.timestamp(),
            )
        )
        created.append(moment)
    with engine.begin() as connection:
        insert_rows(connection, rows, created)
        add_to_daily_totals(connection, rows, created)
    engine.dispose()


def sign_in(page: Page, username: str) -> None:
    page.goto("/login")
    page.fill("#username", username)
    page.fill("#password", "a-password")
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url("**/")


def answer(route: Route) -> None:
    chunks = [ANSWER[i : i + 12] for i in range(0, len(ANSWER), 12)]
    body = "".join(
        "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": c}}]}) + "\n\n"
        for c in chunks
    )
    route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body=body)


def shoot(made: Platform, server: Server, out: Path) -> list[Path]:
    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for lang in ("en", "zh"):
            for size, viewport in SIZES.items():
                context = browser.new_context(
                    base_url=server.url,
                    viewport=viewport,  # type: ignore[arg-type]
                    locale="zh-CN" if lang == "zh" else "en-US",
                    timezone_id="Asia/Shanghai",
                )
                page = context.new_page()
                page.route("**/playground/v1/chat/completions", answer)

                def save(name: str, page: Page = page, size: str = size, lang: str = lang) -> None:
                    suffix = "" if lang == "en" else "-zh"
                    path = out / f"{name}{suffix}-{size}.png"
                    page.screenshot(path=path)
                    saved.append(path)

                sign_in(page, "alice")
                save("home")
                if lang == "zh":
                    page.goto("/usage")
                    save("usage")
                    context.close()
                    continue
                page.goto("/models")
                save("models")
                page.goto("/models/qwen3-vl")
                save("model")
                page.goto("/usage")
                save("usage")
                page.goto("/playground")
                page.fill("#chat-prompt", "How do I get the Z mass from two muons?")
                page.press("#chat-prompt", "Enter")
                page.locator(".turn.assistant .katex").first.wait_for()
                save("playground")
                page.goto("/settings/keys")
                page.fill("#key-name", "notebook")
                page.click("form[action='/settings/keys'] button[type=submit]")
                save("keys")
                context.clear_cookies()
                sign_in(page, "root")
                page.goto("/admin/users")
                save("admin-users")
                page.goto("/admin/models")
                save("admin-models")
                page.goto("/admin/audit")
                save("admin-audit")
                context.close()
        browser.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    with platform() as (made, server):
        made.create_user("root", "--admin")
        made.cli("user", "create", "alice", "--group", "physics", input="a-password\n")
        made.cli("user", "create", "bob", "--group", "physics", input="a-password\n")
        made.create_key("alice", "--name", "laptop")
        seed(made)
        for path in shoot(made, server, options.out):
            print(path)


if __name__ == "__main__":
    main()
