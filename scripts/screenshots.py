"""Screenshots of the portal's main pages at desktop and phone width, for docs/portal.md.

    PYTHONPATH=src .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Starts a throwaway platform (SQLite, the mock upstream, a month of made-up usage), signs in as
an ordinary user and as an admin in Debian's Chromium, and saves each page as
``NAME-desktop.png`` (1366x900) and ``NAME-phone.png`` (390x844). Run from the repository root;
``--only NAME...`` saves just those pages (``--only knowledge knowledge-store admin-knowledge``).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openai
import sqlalchemy as sa
from playwright.sync_api import Page, Route, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.stack import UPSTREAM_KEY, Platform, Server, mock_upstream

from hepai_server.gateway.ledger import UsageRow
from hepai_server.gateway.usage import add_to_budget_totals, add_to_daily_totals, insert_rows

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
        made = Platform(
            data_dir=folder,
            database_url=None,
            config=config,
            extra_env={"HEPAI_SERVER_KNOWLEDGE_EMBEDDING_MODEL": "hep-embed"},
        )
        made.cli("db", "upgrade")
        with made.serve() as server:
            yield made, server


def govern(made: Platform) -> None:
    """Prices for the chat models, alice the lead of physics with a budget to share, bob's
    budget and limits within it, and a budget warning for alice."""
    for model in ("deepseek-r1", "qwen3-vl", "glm-4.6"):
        made.command("price", "set", model, "--input", "2", "--output", "8")
    made.command("price", "set", "hep-embed", "--embedding", "0.5")
    made.command("group", "admin", "physics", "alice")
    made.command("budget", "set", "--group", "physics", "--amount", "10", "--tokens", "5000000")
    made.command("limit", "set", "--group", "physics", "--rpm", "600", "--tpm", "2000000")
    made.command("budget", "set", "--user", "alice", "--amount", "1.5", "--warn-at", "0.8")
    made.command("budget", "set", "--user", "bob", "--amount", "1", "--period", "week")
    made.command("limit", "set", "--user", "bob", "--rpm", "60", "--concurrency", "4")
    made.command("limit", "set", "--everyone", "--rpm", "120")
    made.command("limit", "set", "--model", "deepseek-r1", "--concurrency", "32")
    engine = sa.create_engine(made.sqlalchemy_url)
    with engine.begin() as connection:
        alice = connection.execute(sa.text("SELECT id FROM users WHERE username = 'alice'"))
        connection.execute(
            sa.text(
                "INSERT INTO notices (user_id, kind, detail, created_at) "
                "VALUES (:u, 'budget.warning', :d, :t)"
            ),
            {
                "u": alice.scalar_one(),
                "d": json.dumps(
                    {
                        "budget_id": 0,
                        "scope": "user",
                        "subject": "alice",
                        "spent": 1_204_000_000,
                        "limit": 1_500_000_000,
                        "measure": "money",
                    }
                ),
                "t": datetime.now(UTC) - timedelta(hours=3),
            },
        )
    engine.dispose()


def seed(made: Platform) -> None:
    """A month of usage for alice and bob, written as the usage writer writes it, charged to
    their budgets and their group's."""
    engine = sa.create_engine(made.sqlalchemy_url)
    with engine.connect() as connection:
        found = connection.execute(sa.text("SELECT username, id FROM users")).all()
        charged = connection.execute(
            sa.text(
                "SELECT u.username, b.id FROM budgets b JOIN users u "
                "ON b.scope = 'user' AND b.subject_id = u.id"
            )
        ).all()
        group_budget = connection.execute(
            sa.text("SELECT id FROM budgets WHERE scope = 'group'")
        ).scalar_one()
    ids: dict[str, int] = dict(found)
    own: dict[str, int] = dict(charged)
    rng, now = random.Random(17), datetime.now(UTC)
    rows, created = [], []
    for n in range(1500):
        moment = now - timedelta(seconds=rng.uniform(0, 30 * 86400) ** 1.0)
        prompt, completion = rng.randint(50, 3000), rng.randint(20, 900)
        who = "alice" if rng.random() < 0.6 else "bob"
        rows.append(
            UsageRow(
                request_id=f"req-demo-{n:05d}",
                user_id=ids[who],
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
                budgets=f"{own[who]},{group_budget}",
                client_request_id=None,
                served_model=None,
                created_at=moment.timestamp(),
            )
        )
        created.append(moment)
    with engine.begin() as connection:
        insert_rows(connection, rows, created)
        add_to_daily_totals(connection, rows, created)
        add_to_budget_totals(connection, rows, created, UTC)
    engine.dispose()


NOTES = {
    "beam-test-2026.md": "# Beam test 2026\n\n## Setup\n\nThe prototype sat 3 m downstream of "
    "the target, read out by 64 SiPMs.\n\n## Calibration\n\nThe calorimeter was calibrated with "
    "cosmic muons before the beam arrived, then checked against 1 to 5 GeV electrons.\n",
    "刻度方法.md": "# 量能器刻度\n\n量能器在束流到来之前使用宇宙线缪子进行刻度，随后用 1 到 5 GeV "  # noqa: RUF001
    "电子束检验线性。\n",
    "logbook.docx": "",  # no document tool serves here: it fails, and the page says why
}


def knowledge(server: Server, key: str) -> str:
    """Alice's knowledge base of beam-test notes, processed: its id."""
    client = openai.OpenAI(base_url=server.url + "/apiv2", api_key=key)
    store = client.vector_stores.create(
        name="beam test notes", expires_after={"anchor": "last_active_at", "days": 90}
    )
    client.vector_stores.create(name="detector papers")
    for name, text in NOTES.items():
        data = text.encode() or b"PK\x03\x04"
        file = client.files.create(file=(name, io.BytesIO(data)), purpose="assistants")
        client.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=file.id, poll_interval_ms=200
        )
    client.post(f"/vector_stores/{store.id}/share", body={"groups": ["physics"]}, cast_to=object)
    return store.id


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


def shoot(
    made: Platform, server: Server, out: Path, store: str, only: set[str] | None
) -> list[Path]:
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

                def save(
                    name: str,
                    page: Page = page,
                    size: str = size,
                    lang: str = lang,
                    full_page: bool = False,
                ) -> None:
                    if only is not None and name not in only:
                        return
                    suffix = "" if lang == "en" else "-zh"
                    path = out / f"{name}{suffix}-{size}.png"
                    page.screenshot(path=path, full_page=full_page)
                    saved.append(path)

                sign_in(page, "alice")
                save("home")
                page.goto(
                    f"/knowledge/{store}?q="
                    + ("宇宙线缪子刻度" if lang == "zh" else "How was the calorimeter calibrated?")
                )
                if size == "phone":
                    page.locator("#search-title").scroll_into_view_if_needed()
                save("knowledge-store", full_page=size == "desktop")
                if lang == "zh":
                    page.goto("/usage")
                    save("usage")
                    page.goto("/settings/limits")
                    save("limits")
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
                page.goto("/settings/limits")
                save("limits")
                page.goto("/knowledge")
                save("knowledge")
                page.goto("/groups/physics")
                save("my-group")
                page.goto("/settings/keys")
                page.fill("#key-name", "notebook")
                page.click("form[action='/settings/keys'] button[type=submit]")
                page.locator("#flash-secret").wait_for()
                save("keys")
                context.clear_cookies()
                sign_in(page, "root")
                page.goto("/admin/users")
                save("admin-users")
                page.goto("/admin/models")
                save("admin-models")
                page.goto("/admin/prices")
                save("admin-prices")
                page.goto("/admin/budgets")
                save("admin-budgets", full_page=size == "desktop")
                page.goto("/admin/knowledge")
                save("admin-knowledge")
                page.goto("/admin/audit")
                save("admin-audit")
                context.close()
        browser.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--only", nargs="+", metavar="NAME", help="save only these pages")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    with platform() as (made, server):
        made.create_user("root", "--admin")
        made.cli("user", "create", "alice", "--group", "physics", input="a-password\n")
        made.cli("user", "create", "bob", "--group", "physics", input="a-password\n")
        key = made.create_key("alice", "--name", "laptop")
        store = knowledge(server, key)
        govern(made)
        seed(made)
        only = set(options.only) if options.only else None
        for path in shoot(made, server, options.out, store, only):
            print(path)


if __name__ == "__main__":
    main()
