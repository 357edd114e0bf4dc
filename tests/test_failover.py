"""Several deployments of one model: spread by weight, fail over before the first byte."""

from __future__ import annotations

from pathlib import Path

import httpx

from hepai_server.config import Settings
from tests.inprocess import Account, App, Upstream, prepare, running


async def chat(client: httpx.AsyncClient, key: str, model: str, **extra: object) -> httpx.Response:
    return await client.post(
        "/apiv2/chat/completions",
        headers={"x-api-key": key, **extra.pop("headers", {})},  # type: ignore[dict-item]
        json={"model": model, "messages": [{"role": "user", "content": "failover"}], **extra},
    )


async def test_connection_refused_moves_to_the_next_deployment(
    app: App, client: httpx.AsyncClient, account: Account, unique
) -> None:
    request_id = unique("dead-first")
    response = await chat(
        client, account.key, "failover/dead-first", headers={"x-request-id": request_id}
    )
    assert response.status_code == 200
    assert response.json()["model"] == "failover/dead-first"
    assert (await app.platform.usage_row(request_id))["deployment"] == "mock/failover/dead-first"


async def test_5xx_moves_to_the_next_deployment(
    client: httpx.AsyncClient, account: Account, failing_upstream: Upstream
) -> None:
    before = len(failing_upstream.requests_for("failover/failing-first"))
    response = await chat(client, account.key, "failover/failing-first")
    assert response.status_code == 200
    # The heavy deployment is tried first almost surely (weight 10^6 against 1).
    assert len(failing_upstream.requests_for("failover/failing-first")) == before + 1


async def test_stream_fails_over_before_the_first_byte(
    client: httpx.AsyncClient, account: Account, failing_upstream: Upstream
) -> None:
    before = len(failing_upstream.requests_for("failover/failing-first"))
    response = await chat(client, account.key, "failover/failing-first", stream=True)
    assert response.status_code == 200
    assert response.content.endswith(b"data: [DONE]\n\n")
    assert len(failing_upstream.requests_for("failover/failing-first")) == before + 1


async def test_every_deployment_down_is_a_502(client: httpx.AsyncClient, account: Account) -> None:
    for model in ("failover/all-dead", "failover/all-failing"):
        response = await chat(client, account.key, model)
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "upstream_error"


async def test_load_spreads_by_weight(
    tmp_path: Path, settings: Settings, upstream: Upstream, unique
) -> None:
    """Two equal deployments of one model each take a fair share of 60 calls."""
    config = tmp_path / "providers.yaml"
    config.write_text(
        f"""
providers:
  - name: east
    base_url: {upstream.url}/v1
    api_key_env: MOCK_KEY
    models: [{{id: spread/model, upstream: spread-east}}]
  - name: west
    base_url: {upstream.url}/v1
    api_key_env: MOCK_KEY
    models: [{{id: spread/model, upstream: spread-west}}]
"""
    )
    platform = prepare(
        settings.model_copy(update={"data_dir": tmp_path / "data", "config": config})
    )
    key = platform.make_user(unique("spread")).key
    async with running(platform) as spread, spread.client() as client:
        for _ in range(60):
            assert (await chat(client, key, "spread/model")).status_code == 200
    east, west = (
        len(upstream.requests_for("spread-east")),
        len(upstream.requests_for("spread-west")),
    )
    assert east + west >= 60
    assert min(east, west) >= 12, (east, west)


async def test_upstream_4xx_about_the_request_passes_through(
    app: App, client: httpx.AsyncClient, account: Account, unique
) -> None:
    request_id = unique("upstream-400")
    response = await chat(
        client, account.key, "mock/chat", mock={"status": 422}, headers={"x-request-id": request_id}
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "mock failure 422"
    row = await app.platform.usage_row(request_id)
    assert row["status_code"] == 422 and row["error"] == "mock failure 422"


async def test_upstream_429_is_a_429_when_no_other_deployment_exists(
    client: httpx.AsyncClient, account: Account
) -> None:
    response = await chat(client, account.key, "mock/chat", mock={"status": 429})
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
