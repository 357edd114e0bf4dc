"""Document tools against budgets, in process: a call of a tool priced per page is admitted with
an estimate of its pages, so a burst cannot spend past the budget, and is charged the pages it
reports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from hepai_server.governance import budgets, store
from hepai_server.governance.prices import Price
from hepai_server.worker import Worker, current_call, remote
from tests.inprocess import Account, App, serve_worker

YUAN = 10**9


class Pager(Worker):
    """Converts a document of ``pages`` pages, slowly enough that a burst overlaps."""

    @remote
    def convert(self, pages: int) -> str:
        time.sleep(0.3)
        current_call().report_usage(pages=pages)
        return "# converted"


async def test_a_burst_of_tool_calls_priced_per_page_stays_within_the_budget(
    app: App, make_user: Callable[..., Account], unique: Callable[[str], str]
) -> None:
    owner = make_user()
    pager = Pager()
    pager.name, pager.permission = f"{owner.username}/pager", "groups: all"
    pages = app.gateway.settings.tool_pages_estimate
    with app.platform.session() as session:
        now = datetime.now(UTC)
        store.set_price(
            session, model_id=pager.name, price=Price(per_page=YUAN), now=now, by="test"
        )
        # Room for two and a half calls of the estimated size.
        budgets.set_budget(
            session,
            scope="user",
            subject_id=owner.user_id,
            amount_nanos=pages * YUAN * 5 // 2,
            tokens=None,
            period="day",
            warn_at=0.8,
            now=now,
            by="test",
        )
    await app.gateway.reload_catalog()
    marker = unique("pages")
    async with serve_worker(app, pager, owner.key), app.client() as client:

        async def convert() -> httpx.Response:
            return await client.post(
                "/apiv2/worker/unified_gate/",
                params={"model": pager.name, "function": "convert"},
                json={"kwargs": {"pages": pages}},
                headers={"authorization": f"Bearer {owner.key}", "x-request-id": marker},
            )

        answers = await asyncio.gather(*(convert() for _ in range(6)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200, 200, 429, 429, 429, 429], [a.text for a in answers]
    refused: dict[str, Any] = next(a for a in answers if a.status_code == 429).json()
    assert refused["error"]["code"] == "insufficient_quota"
    rows = await app.platform.usage_rows(marker)
    charged = [row["cost_nanos"] for row in rows if row["status_code"] == 200]
    assert charged == [pages * YUAN] * 2
