"""Routing that stays up while upstreams fail, in process: per-model timeouts, fallbacks to other
models for errors before the first byte (and not after), a failing deployment cooled down and
probed back in, a retry budget, and health checks of the providers shown to admins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hepai_server.config import Settings
from hepai_server.gateway.resilience import Breaker, RetryBudget
from tests.inprocess import App, Upstream, prepare, running
from tests.stack import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_deployment_failing_n_times_in_the_window_is_cooled_down_and_probed_back() -> None:
    clock = Clock()
    breaker = Breaker(failures=3, window=10, cooldown=30, clock=clock)
    for _ in range(2):
        breaker.failed("p/m")
    assert breaker.available("p/m") and not breaker.cooled("p/m")
    clock.now += 11  # older failures leave the window
    for _ in range(2):
        breaker.failed("p/m")
    assert not breaker.cooled("p/m")
    breaker.failed("p/m")
    assert breaker.cooled("p/m") and not breaker.available("p/m")
    assert breaker.cooling() == {"p/m": 30}
    clock.now += 30
    assert breaker.available("p/m"), "one call probes it"
    assert not breaker.available("p/m"), "only one at a time"
    breaker.failed("p/m")
    assert breaker.cooled("p/m"), "a failed probe cools it down again"
    clock.now += 30
    assert breaker.available("p/m")
    breaker.succeeded("p/m")
    assert breaker.available("p/m") and breaker.available("p/m") and not breaker.cooling()


def test_retries_stay_near_their_share_of_requests_during_an_outage() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, per_second=0, clock=clock)
    retried = 0
    for _ in range(1000):  # every request fails on every deployment, all in the same instant
        budget.request()
        while budget.retry():
            retried += 1
    assert 150 <= retried <= 200  # a fifth of the requests, not a multiple of them
    steady = RetryBudget(ratio=0, per_second=5, clock=clock)
    clock.now += 1
    assert [steady.retry() for _ in range(6)] == [True] * 5 + [False]


@pytest.fixture(scope="module")
async def resilient(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: Upstream,
    failing_upstream: Upstream,
    provider_keys: None,
) -> AsyncIterator[App]:
    """An app whose models fail in the ways this module tests."""
    root: Path = tmp_path_factory.mktemp("resilience")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = root / "providers.yaml"
    config.write_text(
        f"""
providers:
  - name: mock
    base_url: {upstream.url}/v1
    api_key_env: MOCK_KEY
    models:
      - {{id: fb/target, upstream: chat-upstream}}
      - {{id: fb/private-target, groups: [nobody]}}
      - {{id: slow/model, timeouts: {{first_byte: 0.3}}}}
      - {{id: cool/model, weight: 1}}
      - {{id: late/breaks, fallbacks: [fb/target]}}
  - name: dead
    base_url: {dead}
    models:
      - {{id: fb/primary, fallbacks: [fb/private-target, fb/target]}}
      - {{id: fb/nowhere, fallbacks: [fb/private-target]}}
  - name: failing
    base_url: {failing_upstream.url}/v1
    models:
      - {{id: cool/model, weight: 1000000}}
"""
    )
    settings = Settings(
        data_dir=root / "data",
        config=config,
        usage_flush_seconds=0.02,
        breaker_failures=2,
        breaker_cooldown_seconds=60,
        retry_budget_per_second=100,
        health_check_seconds=0,
    )
    async with running(prepare(settings)) as app:
        yield app


def chat(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def test_a_fallback_answers_when_every_deployment_fails_before_the_first_byte(
    resilient: App, unique
) -> None:
    account = resilient.platform.make_user(unique("fallback"))
    headers = {"authorization": f"Bearer {account.key}"}
    async with resilient.client(headers=headers) as client:
        answer = await client.post("/apiv2/chat/completions", json=chat("fb/primary"))
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "fb/primary", "answered as the model asked for"
        assert answer.headers["x-hepai-deployment"] == "mock/chat-upstream"
        row = await resilient.platform.usage_row(answer.headers["x-request-id"])
        assert row["model"] == "fb/primary" and row["served_model"] == "fb/target"
        # A fallback the caller may not call is skipped, never used.
        nowhere = await client.post("/apiv2/chat/completions", json=chat("fb/nowhere"))
        assert nowhere.status_code == 502


async def test_no_fallback_once_the_answer_has_begun(
    resilient: App, upstream: Upstream, unique
) -> None:
    account = resilient.platform.make_user(unique("late"))
    headers = {"authorization": f"Bearer {account.key}"}
    tag = unique("late")
    body = chat("late/breaks", stream=True, mock={"break_after": 2, "tag": tag})
    async with (
        resilient.client(headers=headers) as client,
        client.stream("POST", "/apiv2/chat/completions", json=body) as answer,
    ):
        text = (await answer.aread()).decode()
    assert answer.status_code == 200 and '"error"' in text
    assert all(
        request["body"].get("mock", {}).get("tag") != tag
        for request in upstream.requests_for("chat-upstream")
    ), "the fallback model was never asked"


async def test_a_model_answering_too_slowly_times_out_at_its_own_limit(
    resilient: App, unique
) -> None:
    account = resilient.platform.make_user(unique("slow"))
    headers = {"authorization": f"Bearer {account.key}"}
    async with resilient.client(headers=headers) as client:
        answer = await client.post(
            "/apiv2/chat/completions", json=chat("slow/model", mock={"delay": 2.0})
        )
    assert answer.status_code == 504, answer.text


async def test_a_failing_deployment_is_cooled_down_and_calls_go_elsewhere(
    resilient: App, failing_upstream: Upstream, unique
) -> None:
    """cool/model's heavy deployment always answers 500: after two failures it is left out,
    and the next calls go straight to the healthy one."""
    account = resilient.platform.make_user(unique("cool"))
    headers = {"authorization": f"Bearer {account.key}"}
    before = len(failing_upstream.requests_for("cool/model"))
    async with resilient.client(headers=headers) as client:
        for _ in range(6):
            answer = await client.post("/apiv2/chat/completions", json=chat("cool/model"))
            assert answer.status_code == 200
    assert len(failing_upstream.requests_for("cool/model")) - before == 2
    admin = resilient.platform.make_user(unique("ops"), admin=True)
    async with resilient.client(headers={"authorization": f"Bearer {admin.key}"}) as client:
        health = (await client.get("/apiv2/providers/health")).json()
        refused = await client.get(
            "/apiv2/providers/health", headers={"authorization": f"Bearer {account.key}"}
        )
    assert "failing/cool/model" in health["cooling_down"]
    assert refused.status_code == 403


async def test_health_checks_record_each_provider_and_cool_down_the_dead_ones(
    resilient: App, unique
) -> None:
    checks = resilient.gateway.probes
    await checks.check_all()  # two failures cool a deployment down here
    results = {result.provider: result for result in await checks.check_all()}
    assert results["mock"].ok and results["mock"].status == 200
    assert results["dead"].down and "unreachable" in results["dead"].detail
    assert set(results) == {"mock", "dead", "failing"}
    admin = resilient.platform.make_user(unique("ops"), admin=True)
    async with resilient.client(headers={"authorization": f"Bearer {admin.key}"}) as client:
        shown = (await client.get("/apiv2/providers/health")).json()
    assert {row["provider"]: row["ok"] for row in shown["data"]}["mock"] is True
    assert "dead/fb/primary" in shown["cooling_down"]
    assert "mock/chat-upstream" not in shown["cooling_down"]


def test_an_unknown_timeout_setting_is_refused() -> None:
    from pydantic import ValidationError

    from hepai_server.config import ModelConfig

    with pytest.raises(ValidationError):
        ModelConfig(id="x/y", timeouts={"firstbyte": 1})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ModelConfig(id="x/y", timeouts={"total": -1})  # type: ignore[arg-type]
