"""Several deployments of one model: spread by weight, fail over before the first byte."""

from __future__ import annotations

import httpx

from tests.stack import MockProcess, Platform, Server


def chat(server: Server, key: str, model: str, **extra: object) -> httpx.Response:
    return httpx.post(
        server.base_url + "/chat/completions",
        headers={"x-api-key": key, **extra.pop("headers", {})},  # type: ignore[dict-item]
        json={"model": model, "messages": [{"role": "user", "content": "failover"}], **extra},
    )


def test_connection_refused_moves_to_the_next_deployment(
    platform: Platform, server: Server, user_key: str, unique
) -> None:
    request_id = unique("dead-first")
    response = chat(server, user_key, "failover/dead-first", headers={"x-request-id": request_id})
    assert response.status_code == 200
    assert response.json()["model"] == "failover/dead-first"
    assert platform.usage_row(request_id)["deployment"] == "mock/failover/dead-first"


def test_5xx_moves_to_the_next_deployment(
    server: Server, user_key: str, mock: MockProcess, failing_mock: MockProcess
) -> None:
    before = len(failing_mock.requests_for("failover/failing-first"))
    response = chat(server, user_key, "failover/failing-first")
    assert response.status_code == 200
    # The heavy deployment is tried first almost surely (weight 10^6 against 1).
    assert len(failing_mock.requests_for("failover/failing-first")) == before + 1


def test_stream_fails_over_before_the_first_byte(server: Server, user_key: str) -> None:
    with httpx.stream(
        "POST",
        server.base_url + "/chat/completions",
        headers={"x-api-key": user_key},
        json={
            "model": "failover/failing-first",
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
    ) as response:
        body = response.read()
    assert response.status_code == 200
    assert body.endswith(b"data: [DONE]\n\n")


def test_every_deployment_down_is_a_502(server: Server, user_key: str) -> None:
    for model in ("failover/all-dead", "failover/all-failing"):
        response = chat(server, user_key, model)
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "upstream_error"


def test_load_spreads_by_weight(tmp_path, mock: MockProcess, unique) -> None:
    """Two equal deployments of one model each take a fair share of 60 calls."""
    from tests.stack import Platform as Fresh

    second = f"{mock.url}/v1"
    config = tmp_path / "providers.yaml"
    config.write_text(
        f"""
providers:
  - name: east
    base_url: {second}
    api_key_env: MOCK_KEY
    models: [{{id: spread/model, upstream: spread-east}}]
  - name: west
    base_url: {second}
    api_key_env: MOCK_KEY
    models: [{{id: spread/model, upstream: spread-west}}]
"""
    )
    platform = Fresh(data_dir=tmp_path / "data", database_url=None, config=config)
    key = platform.create_user(unique("spread"))
    with platform.serve() as server:
        for _ in range(60):
            assert chat(server, key, "spread/model").status_code == 200
    east, west = len(mock.requests_for("spread-east")), len(mock.requests_for("spread-west"))
    assert east + west >= 60
    assert min(east, west) >= 12, (east, west)


def test_upstream_4xx_about_the_request_passes_through(
    platform: Platform, server: Server, user_key: str, unique
) -> None:
    request_id = unique("upstream-400")
    response = chat(
        server, user_key, "mock/chat", mock={"status": 422}, headers={"x-request-id": request_id}
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "mock failure 422"
    row = platform.usage_row(request_id)
    assert row["status_code"] == 422 and row["error"] == "mock failure 422"


def test_upstream_429_is_a_429_when_no_other_deployment_exists(
    server: Server, user_key: str
) -> None:
    response = chat(server, user_key, "mock/chat", mock={"status": 429})
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
