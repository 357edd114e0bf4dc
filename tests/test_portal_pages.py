"""The portal's pages without a browser: both languages say everything, the language follows
the browser, charts scale, and pages carry their protective headers."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from hepai_server.portal.charts import bar_chart, nice_ceiling
from hepai_server.portal.i18n import choose_language, load_catalogs
from hepai_server.portal.views.models import TYPES
from tests.inprocess import BASE_URL, Account, App
from tests.portal import PASSWORD, AppVisitor

TEMPLATES = Path(__file__).parent.parent / "src/hepai_server/portal/templates"
VIEWS = Path(__file__).parent.parent / "src/hepai_server/portal/views"


def keys_in_use() -> set[str]:
    """Every message key the templates and views name, the computed ones spelled out."""
    quoted = re.compile(
        r"""['"]((?:nav|common|error|auth|password|keys|models|usage|admin|files|play|workers|providers|permissions)\.[a-z_0-9]+)['"]"""
    )
    keys: set[str] = set()
    for source in [*TEMPLATES.glob("*.html"), *VIEWS.glob("*.py")]:
        keys |= set(quoted.findall(source.read_text()))
    keys = {key for key in keys if not key.endswith((".html", "_"))}
    keys |= {f"models.type_{kind}" for kind in TYPES}
    keys |= {f"models.status_{status}" for status in ("ready", "live", "offline")}
    keys |= {f"admin.level_{level}" for level in ("user", "admin")}
    keys |= {f"error.title_{status}" for status in (401, 403, 404, 429)}
    keys |= {f"providers.{action}" for action in ("test", "enable", "disable")}
    keys |= {f"workers.state_{state}" for state in ("live", "expired", "stopped", "held")}
    return keys


def test_both_languages_have_every_message() -> None:
    catalogs = load_catalogs()
    assert catalogs["zh"].keys() == catalogs["en"].keys()
    used = keys_in_use()
    assert len(used) > 100
    assert used - catalogs["en"].keys() == set()
    assert all(catalogs["zh"][key] != catalogs["en"][key] for key in ("auth.title", "nav.models"))


@pytest.mark.parametrize(
    ("cookie", "accept", "chosen"),
    [
        (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        (None, "en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        (None, "fr-FR,zh-TW;q=0.7,en;q=0.5", "zh"),
        (None, "fr-FR,de;q=0.5", "en"),
        (None, "en;q=0.2,zh;q=0.8", "zh"),
        (None, None, "en"),
        ("en", "zh-CN", "en"),
        ("klingon", "zh-CN", "zh"),
    ],
)
def test_the_language_follows_the_switch_then_the_browser(
    cookie: str | None, accept: str | None, chosen: str
) -> None:
    assert choose_language(cookie, accept) == chosen


def test_charts_scale_to_a_round_ceiling() -> None:
    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 10, 11, 260, 999_999)] == [
        1,
        1,
        5,
        10,
        10,
        20,
        500,
        1_000_000,
    ]
    chart = bar_chart([("2026-11-01", 0), ("2026-11-02", 50), ("2026-11-03", 100)], height=200)
    tallest = max(chart.bars, key=lambda bar: bar.value)
    assert tallest.height == pytest.approx(200 - chart.bottom - 8)
    assert chart.bars[0].height == 0 and not chart.is_empty
    assert [tick.value for tick in chart.ticks] == [0, 50, 100]
    assert [tick.value for tick in bar_chart([("d", 1)]).ticks] == [0, 1]
    assert bar_chart([("d", 0)]).is_empty
    many = bar_chart([(f"day-{n}", n) for n in range(90)])
    assert len(many.labels) <= 10


async def test_pages_follow_the_browser_language_and_carry_protective_headers(
    app: App, make_user: Callable[..., Account]
) -> None:
    username = make_user(password=PASSWORD).username
    async with AppVisitor(app, language="zh-CN,zh;q=0.9") as visitor:
        login = await visitor.get("/login")
        assert "登录 HepAI" in login.text and '<html lang="zh-CN">' in login.text
        await visitor.sign_in(username)
        page = await visitor.get("/models")
        assert page.status_code == 200 and "<h1>模型</h1>" in page.text
        headers = page.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
        switched = await visitor.get("/lang/en?next=/usage")
        assert switched.status_code == 303 and switched.headers["location"] == "/usage"
        assert "<h1>Usage</h1>" in (await visitor.get("/usage")).text
        # Snippets name this server, so they work when pasted.
        assert f'base_url="{BASE_URL}/apiv2"' in (await visitor.get("/models")).text
