"""Tools against budgets, in process: a call of a tool priced per page is admitted with an
estimate of its pages, so a burst cannot spend past the budget, and is charged the pages it
reports; a chat or a response that searches files with file_search is admitted with room for
the passages the search will put into its prompt."""

from __future__ import annotations

import asyncio
import io
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


NOTES = """# Cryostat notes

The cryostat was cooled to 4.2 K in three days; its heat load is within the design value.
"""


async def test_a_burst_of_searching_calls_reserves_room_for_the_passages(
    app: App, make_user: Callable[..., Account], unique: Callable[[str], str]
) -> None:
    """A budget of 10,000 tokens, and calls whose prompts are a few dozen tokens until the
    search adds up to five passages of the store's 800-token chunks: two at a time are
    admitted, not all six, on the chat route and the Responses API alike."""
    owner = make_user()
    async with app.openai(owner.key) as client:
        store = await client.vector_stores.create(name="cryostat")
        upload = await client.files.create(
            file=("notes.md", io.BytesIO(NOTES.encode())), purpose="assistants"
        )
        attached = await client.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=upload.id, poll_interval_ms=50
        )
        assert attached.status == "completed", attached.last_error
    with app.platform.session() as session:
        budgets.set_budget(
            session,
            scope="user",
            subject_id=owner.user_id,
            amount_nanos=None,
            tokens=10_000,
            period="day",
            warn_at=0.8,
            now=datetime.now(UTC),
            by="test",
        )
    await app.gateway.reload_catalog()
    tool = {"type": "file_search", "vector_store_ids": [store.id]}
    question = "How cold was the cryostat?"
    chat = {
        "model": "mock/chat",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 16,
        "tools": [tool],
        "mock": {"delay": 0.5},  # answers slowly enough that the burst overlaps
    }
    response = {
        "model": "mock/chat",
        "input": question,
        "max_output_tokens": 16,
        "tools": [tool],
        "store": False,
        "mock": {"delay": 0.5},
    }
    async with app.client() as client:

        async def call(path: str, body: dict[str, Any], request_id: str) -> int:
            answer = await client.post(
                path,
                json=body,
                headers={"authorization": f"Bearer {owner.key}", "x-request-id": request_id},
            )
            assert answer.status_code in (200, 429), answer.text
            if answer.status_code == 429:
                assert answer.json()["error"]["code"] == "insufficient_quota"
            return answer.status_code

        for path, body in (("/apiv2/chat/completions", chat), ("/apiv2/responses", response)):
            marker = unique("search")
            burst = (call(path, body, f"{marker}-{n}") for n in range(6))
            statuses = sorted(await asyncio.gather(*burst))
            assert statuses == [200, 200, 429, 429, 429, 429], (path, statuses)
