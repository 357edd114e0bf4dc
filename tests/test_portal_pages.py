"""The portal's pages without a browser: both languages say everything, the language follows
the browser, charts scale, and pages carry their protective headers."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from hepai_server.governance.budgets import PERIODS
from hepai_server.governance.prices import TOKEN_PRICES, UNIT_PRICES
from hepai_server.governance.subjects import LIMIT_SCOPES
from hepai_server.portal.charts import nice_ceiling, stacked_chart
from hepai_server.portal.i18n import choose_language, load_catalogs
from hepai_server.portal.notices import every_key
from hepai_server.portal.views.models import STATUSES, TYPES
from tests.inprocess import BASE_URL, Account, App
from tests.portal import PASSWORD, AppVisitor

TEMPLATES = Path(__file__).parent.parent / "src/hepai_server/portal/templates"
VIEWS = Path(__file__).parent.parent / "src/hepai_server/portal/views"


def keys_in_use() -> set[str]:
    """Every message key the templates and views name, the computed ones spelled out."""
    quoted = re.compile(
        r"""['"]((?:nav|common|errors|auth|password|keys|models|usage|admin|files|play|workers|"""
        r"""providers|permissions|flash|home|log|snippet|groups|prices|budgets|limits|subjects|"""
        r"""notices|mygroups)\.[a-z_0-9]+)['"]"""
    )
    keys: set[str] = set()
    for source in [*TEMPLATES.glob("*.html"), *VIEWS.glob("*.py")]:
        keys |= set(quoted.findall(source.read_text()))
    keys = {key for key in keys if not key.endswith((".html", "_"))}
    keys |= {f"models.type_{kind}" for kind in TYPES}
    keys |= {f"models.status_{status}" for status in STATUSES}
    keys |= {f"models.cap_{capability}" for capability in ("vision", "tools", "reasoning")}
    keys |= {f"admin.level_{level}" for level in ("user", "admin")}
    keys |= {f"admin.user_{done}" for done in ("disabled", "enabled", "saved")}
    keys |= {f"errors.title_{status}" for status in (401, 403, 404, 429, 500)}
    keys |= every_key()
    keys |= {f"log.status_{status}" for status in (400, 401, 403, 404, 408, 413, 429, 500)}
    keys |= {f"log.status_{status}" for status in (502, 503, 504, "4xx", "5xx")}
    keys |= {f"providers.{action}" for action in ("test", "fetch", "enable", "disable")}
    keys |= {f"providers.{action}_done" for action in ("enable", "disable", "rekey", "delete")}
    results = ("ok", "refused", "unreachable", "not_a_list")
    keys |= {f"providers.{kind}_{result}" for kind in ("probe", "result") for result in results}
    keys |= {f"snippet.{tab}" for tab in ("curl", "openai", "hepai")}
    keys |= {f"workers.state_{state}" for state in ("live", "expired", "stopped", "held")}
    keys |= {f"audit.{action}" for action in AUDIT_ACTIONS}
    keys |= {f"detail.{name}" for name in AUDIT_DETAILS}
    keys |= {f"prices.field_{name}" for name in (*TOKEN_PRICES, *UNIT_PRICES)}
    keys |= {f"prices.defaults_to_{name}" for name in ("input", "output")}
    keys |= {f"subjects.scope_{scope}" for scope in LIMIT_SCOPES}
    keys |= {f"budgets.period_{period}" for period in PERIODS}
    keys |= {f"limits.{name}" for name in ("rpm", "tpm", "concurrency")}
    keys |= {f"limits.whose_{whom}" for whom in ("mine", "everyone", "group", "model", "key")}
    keys |= {
        f"notices.{whose}_{kind}_{measure}"
        for whose in ("budget", "own")
        for kind in ("warning", "exhausted")
        for measure in ("money", "tokens")
    }
    keys |= {f"notices.kind_{kind}" for kind in ("warning", "exhausted")}
    keys |= {
        f"groups.{action}_done" for action in ("budget", "limits", "clear_budget", "clear_limits")
    }
    keys |= {f"{kind}s.cleared" for kind in ("budget", "limit")}
    return keys


#: Every action the audit log records, and the names in their details (shown translated).
AUDIT_ACTIONS = (
    *(f"user.{action}" for action in ("create", "disable", "enable", "save")),
    *(
        f"provider.{action}"
        for action in ("add", "enable", "disable", "rekey", "delete", "test", "fetch")
    ),
    "model.permission",
    "model.reset_permission",
    "worker.stop",
    "worker.release",
    "group.create",
    "group.add_member",
    "group.invite_member",
    "group.join",
    "group.remove_member",
    "group.admin_add",
    "group.admin_remove",
    *(f"group.member_{what}" for what in ("budget", "limits", "budget_clear", "limits_clear")),
    *(f"{kind}.{action}" for kind in ("price", "budget", "limit") for action in ("set", "clear")),
    # Recorded by the CLI and the API, shown on the same page.
    *(f"key.{action}_for_user" for action in ("create", "revoke", "fetch")),
)
AUDIT_DETAILS = ("level", "groups", "email", "base_url", "models", "key_set", "users")
AUDIT_DETAILS += ("result", "status", "added", "user", "price", "currency", *TOKEN_PRICES)
AUDIT_DETAILS += (*UNIT_PRICES, "amount", "tokens", "period", "warn_at", "model", "rpm", "tpm")
AUDIT_DETAILS += ("concurrency", "via", "name", "key")


def test_every_action_the_portal_audits_has_a_readable_name() -> None:
    recorded = set()
    for source in VIEWS.glob("*.py"):
        text = source.read_text()
        recorded |= set(re.findall(r'record_action\([^)]*?"([a-z_]+\.[a-z_]+)"', text, re.S))
    # The ones whose action is computed are spelled out in AUDIT_ACTIONS.
    assert recorded <= set(AUDIT_ACTIONS)
    catalogs = load_catalogs()
    for language in ("en", "zh"):
        assert all(f"audit.{action}" in catalogs[language] for action in AUDIT_ACTIONS)


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
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    values = {("2026-11-02", "a"): 30, ("2026-11-02", "b"): 20, ("2026-11-03", "a"): 100}
    chart = stacked_chart(days, values, ("a", "b"), other="other", total_label="Total", height=200)
    tallest = max(chart.columns, key=lambda column: column.total)
    assert sum(s.height for s in tallest.segments) == pytest.approx(200 - chart.bottom - 18)
    assert chart.columns[0].segments == () and not chart.is_empty
    assert [tick.value for tick in chart.ticks] == [0, 50, 100]
    assert stacked_chart(["d"], {}, (), other="o", total_label="T").is_empty


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
        snippets = html.unescape((await visitor.get("/models/mock/chat")).text)
        assert f'base_url="{BASE_URL}/apiv2"' in snippets
