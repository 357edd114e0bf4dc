"""Budget alerts, in process: crossing a budget's warning threshold, then its limit, tells its
owner once each per period, by a portal notice, the operator's webhook and e-mail (a real
SMTP server, aiosmtpd, receiving on loopback)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiosmtpd.controller import Controller

from hepai_server.config import Settings
from hepai_server.gateway.alerts import webhook_body
from hepai_server.governance import budgets
from hepai_server.governance.budgets import BudgetRule
from tests.inprocess import App, Upstream, prepare, running


class Inbox:
    """What the SMTP server received."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((list(envelope.rcpt_tos), envelope.content.decode()))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
async def hooks() -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
    """A webhook receiver on loopback, and its URL."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield received, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


@pytest.fixture(scope="module")
def inbox() -> Any:
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


@pytest.fixture(scope="module")
async def alerting(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: Upstream,
    provider_keys: None,
    hooks: tuple[list[dict[str, Any]], str],
    inbox: tuple[Inbox, int],
) -> AsyncIterator[App]:
    root: Path = tmp_path_factory.mktemp("alerts")
    config = root / "providers.yaml"
    config.write_text(
        f"""
providers:
  - name: mock
    base_url: {upstream.url}/v1
    api_key_env: MOCK_KEY
    models:
      - {{id: priced/rerank, type: rerank, price: {{per_call: 1}}}}
"""
    )
    settings = Settings(
        data_dir=root / "data",
        config=config,
        usage_flush_seconds=0.02,
        alert_webhook_url=hooks[1],
        smtp_host="127.0.0.1",
        smtp_port=inbox[1],
        smtp_starttls=False,
        smtp_from="alerts@hepai.test",
        health_check_seconds=0,
    )
    async with running(prepare(settings)) as app:
        yield app


async def test_a_budget_warns_once_then_says_it_is_spent_once(
    alerting: App, hooks: tuple[list[dict[str, Any]], str], inbox: tuple[Inbox, int], unique
) -> None:
    received, _url = hooks
    mails, _port = inbox
    user = alerting.platform.make_user(unique("spender"), email="spender@hepai.test")
    with alerting.platform.session() as session:
        budgets.set_budget(
            session,
            scope="user",
            subject_id=user.user_id,
            amount_nanos=4 * 10**9,
            tokens=None,
            period="day",
            warn_at=0.5,
            now=datetime.now(UTC),
            by="test",
        )
    await alerting.gateway.reload_catalog()
    body = {"model": "priced/rerank", "query": "q", "documents": ["a"]}
    async with alerting.client(headers={"authorization": f"Bearer {user.key}"}) as client:
        statuses = [(await client.post("/apiv2/rerank", json=body)).status_code for _ in range(6)]
    assert statuses == [200] * 4 + [429] * 2
    for _ in range(100):  # settlement, alerts and their deliveries run in the background
        if len(received) >= 2 and len(mails.mails) >= 2:
            break
        await asyncio.sleep(0.05)
    mine = [hook for hook in received if hook["budget"]["subject"] == user.username]
    assert [hook["event"] for hook in mine] == ["budget.warning", "budget.exhausted"]
    assert mine[1]["spent"] == mine[1]["limit"] == 4 * 10**9
    to_me = [text for rcpt, text in mails.mails if rcpt == ["spender@hepai.test"]]
    assert len(to_me) == 2 and "is spent" in to_me[1] and "4.00 of 4.00 CNY" in to_me[1]
    engine = sa.create_engine(alerting.gateway.settings.sqlalchemy_url)
    with engine.connect() as connection:
        kinds = (
            connection.execute(
                sa.text("SELECT kind FROM notices WHERE user_id = :u ORDER BY id"),
                {"u": user.user_id},
            )
            .scalars()
            .all()
        )
    engine.dispose()
    assert kinds == ["budget.warning", "budget.exhausted"]


def test_chat_bots_get_their_own_message_formats() -> None:
    budget = BudgetRule(1, "group", 2, 10, None, "month", 0.8, datetime.now(UTC))
    text = "HepAI budget of group cms (month) is spent: 10.00 of 10.00 CNY."
    assert webhook_body("wecom", text, budget, "exhausted", "cms", 10, 10) == {
        "msgtype": "text",
        "text": {"content": text},
    }
    assert webhook_body("feishu", text, budget, "exhausted", "cms", 10, 10) == {
        "msg_type": "text",
        "content": {"text": text},
    }
    assert webhook_body("slack", text, budget, "exhausted", "cms", 10, 10) == {"text": text}
    generic = webhook_body("json", text, budget, "exhausted", "cms", 10, 10)
    assert generic["event"] == "budget.exhausted" and generic["budget"]["subject"] == "cms"
