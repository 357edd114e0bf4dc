"""Prices, budgets and rate limits in a real gateway, set with the admin CLI: every row carries
its cost; a burst against a budget overshoots by at most one request; RPM, TPM and concurrency
hold at their boundary with OpenAI's headers; the ledger's totals agree with its rows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import sqlalchemy as sa

from tests.stack import Platform, Server


def chat(server: Server, key: str, **extra: Any) -> httpx.Response:
    body = {"model": "mock/chat", "messages": [{"role": "user", "content": "one two three"}]}
    return httpx.post(
        f"{server.base_url}/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={**body, **extra},
        timeout=30,
    )


def limits_of(server: Server, key: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{server.base_url}/billing/limits", headers={"authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Changes made with the CLI reach the server within half a second (its refresher)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def rows(platform: Platform, username: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(platform.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                sa.text(
                    "SELECT r.* FROM usage_records r JOIN users u ON u.id = r.user_id "
                    "WHERE u.username = :u ORDER BY r.id"
                ),
                {"u": username},
            )
            return [dict(row._mapping) for row in found]
    finally:
        engine.dispose()


def settled(platform: Platform, username: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while len(found := rows(platform, username)) < count:
        assert time.monotonic() < deadline, f"{len(found)} of {count} rows"
        time.sleep(0.05)
    return found


def test_every_row_carries_its_cost_at_the_price_when_it_ended(
    platform: Platform, server: Server, unique
) -> None:
    """mock/complete reports its prompt tokens (half of them cached) and completion tokens."""
    user = unique("priced")
    key = platform.create_user(user)
    model = "mock/complete"
    platform.cli("price", "set", model, "--input", "2", "--cached-input", "0.5", "--output", "8")
    body = {"model": model, "prompt": "one two three"}
    headers = {"authorization": f"Bearer {key}"}
    answers: list[httpx.Response] = []

    def priced() -> bool:  # the price reaches the server within half a second
        answers.append(httpx.post(f"{server.base_url}/completions", headers=headers, json=body))
        assert answers[-1].status_code == 200
        return bool(settled(platform, user, len(answers))[-1]["cost_nanos"])

    wait_for(priced, "the price is in force")
    usage = answers[-1].json()["usage"]
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    # Per million tokens 2, 0.5 and 8 are 2,000, 500 and 8,000 nanos per token.
    expected = (prompt - cached) * 2000 + cached * 500 + completion * 8000
    platform.cli("price", "set", model, "--input", "100", "--output", "100")
    row = settled(platform, user, len(answers))[-1]
    assert row["cost_nanos"] == expected, "the price when the request ended, not a later one"
    listed = platform.cli("price", "list").stdout
    assert model in listed and "input=100" in listed
    platform.cli("price", "clear", model)


def test_a_burst_against_a_budget_overshoots_by_at_most_one_request(
    platform: Platform, server: Server, unique
) -> None:
    """50 requests at once against a budget that allows 10 (each costs 1 per call): at most one
    more than ten is answered; the others get OpenAI's insufficient_quota before any upstream
    call; the budget's spend is what the rows say."""
    user = unique("bursty")
    key = platform.create_user(user)
    model = "mock/rerank"
    platform.cli("price", "set", model, "--per-call", "1")
    platform.cli("budget", "set", "--user", user, "--amount", "10", "--period", "day")
    wait_for(lambda: bool(limits_of(server, key)["budgets"]), "the budget is in force")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            headers={"authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            body = {"model": model, "query": "q", "documents": ["a", "b"], "mock": {"delay": 0.2}}
            return list(
                await asyncio.gather(
                    *(client.post(f"{server.base_url}/rerank", json=body) for _ in range(50))
                )
            )

    answers = asyncio.run(burst())
    ok = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(ok) + len(refused) == 50
    assert 10 <= len(ok) <= 11
    error = refused[0].json()["error"]
    assert error["type"] == "insufficient_quota" and error["code"] == "insufficient_quota"
    assert int(refused[0].headers["retry-after"]) >= 1
    found = settled(platform, user, 50)
    assert sum(row["cost_nanos"] for row in found) == len(ok) * 1_000_000_000
    spent = limits_of(server, key)["budgets"][0]
    assert spent["spent"] == f"{len(ok)}.0000"
    assert float(spent["remaining"]) == max(10 - len(ok), 0)
    platform.cli("price", "clear", model)


def test_requests_per_minute_hold_at_the_boundary_with_openais_headers(
    platform: Platform, server: Server, unique
) -> None:
    user = unique("rpm")
    key = platform.create_user(user)
    platform.cli("limit", "set", "--user", user, "--rpm", "3")
    wait_for(lambda: bool(limits_of(server, key)["rate_limits"]), "the limit is in force")
    # Start at the beginning of a window, so all four land in one.
    first = chat(server, key)
    reset = first.headers["x-ratelimit-reset-requests"]
    if first.headers["x-ratelimit-remaining-requests"] != "2" or reset.endswith("ms"):
        time.sleep(float(reset.removesuffix("ms")) / 1000 if reset.endswith("ms") else 0)
    answers = [first] + [chat(server, key) for _ in range(3)]
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 3 and statuses[-1] == 429, statuses
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    remaining = [int(a.headers["x-ratelimit-remaining-requests"]) for a in answers[:3]]
    assert remaining == [2, 1, 0]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_tokens_per_minute_reserve_the_estimate(platform: Platform, server: Server, unique) -> None:
    """With 1,000 tokens a minute, a request that may produce 600 leaves no room for a second
    like it; a small one still fits, and the tokens headers say what is left."""
    user = unique("tpm")
    key = platform.create_user(user)
    platform.cli("limit", "set", "--user", user, "--tpm", "1000")
    wait_for(lambda: bool(limits_of(server, key)["rate_limits"]), "the limit is in force")
    big = chat(server, key, max_tokens=600)
    assert big.status_code == 200 and big.headers["x-ratelimit-limit-tokens"] == "1000"
    # Settled at what it used (a few tokens), so a second big one fits now.
    wait_for(lambda: chat(server, key, max_tokens=600).status_code == 200, "settled to actual")
    assert chat(server, key, max_tokens=2000).status_code == 429


def test_concurrency_limits_requests_at_once(platform: Platform, server: Server, unique) -> None:
    user = unique("conc")
    key = platform.create_user(user)
    platform.cli("limit", "set", "--user", user, "--concurrency", "2")
    wait_for(lambda: bool(limits_of(server, key)["rate_limits"]), "the limit is in force")

    async def three() -> list[int]:
        async with httpx.AsyncClient(
            headers={"authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            body = {
                "model": "mock/chat",
                "messages": [{"role": "user", "content": "hi"}],
                "mock": {"delay": 1.0},
            }
            answers = await asyncio.gather(
                *(client.post(f"{server.base_url}/chat/completions", json=body) for _ in range(3))
            )
            return sorted(a.status_code for a in answers)

    assert asyncio.run(three()) == [200, 200, 429]
    assert chat(server, key).status_code == 200, "the slots are free again"


def test_the_ledgers_totals_agree_with_its_rows(
    platform: Platform, server: Server, user_key: str
) -> None:
    for _ in range(3):
        assert chat(server, user_key).status_code == 200
    time.sleep(0.5)  # the batch writer's interval
    result = platform.cli("usage", "verify", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    engine = sa.create_engine(platform.sqlalchemy_url)
    with engine.begin() as connection:  # a total that disagrees is found
        connection.execute(sa.text("UPDATE usage_daily SET requests = requests + 1"))
    engine.dispose()
    broken = platform.cli("usage", "verify", check=False)
    assert broken.returncode == 1 and "usage_daily" in broken.stdout
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE usage_daily SET requests = requests - 1"))
    engine.dispose()
    assert platform.cli("usage", "verify", check=False).returncode == 0
