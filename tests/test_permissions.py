"""Who may call which model: groups, users, everyone, admins; and a refusal looks like absence."""

from __future__ import annotations

import httpx
import pytest

from tests.stack import MockProcess, Platform, Server

RESTRICTED = ("team/physics-only", "team/bob-only")


def visible(server: Server, key: str) -> set[str]:
    response = httpx.get(server.base_url + "/models", headers={"x-api-key": key})
    assert response.status_code == 200
    return {row["id"] for row in response.json()["data"]}


def call(server: Server, key: str, model: str) -> httpx.Response:
    return httpx.post(
        server.base_url + "/chat/completions",
        headers={"x-api-key": key},
        json={"model": model, "messages": [{"role": "user", "content": "perm"}]},
    )


@pytest.fixture(scope="module")
def keys(platform: Platform) -> dict[str, str]:
    """One account per row of the matrix; names the providers file refers to."""
    suffix = platform.data_dir.name
    return {
        "plain": platform.create_user(f"plain-{suffix}"),
        "physicist": platform.create_user(f"physicist-{suffix}", "--group", "physics"),
        "bob": platform.create_user("bob"),
        "admin": platform.create_user(f"admin-{suffix}", "--admin"),
    }


@pytest.mark.both_databases
@pytest.mark.parametrize(
    ("account", "allowed"),
    [
        ("plain", set()),
        ("physicist", {"team/physics-only"}),
        ("bob", {"team/bob-only"}),
        ("admin", set(RESTRICTED)),
    ],
)
def test_permission_matrix(
    server: Server, mock: MockProcess, keys: dict[str, str], account: str, allowed: set[str]
) -> None:
    key = keys[account]
    models = visible(server, key)
    assert "mock/chat" in models, "groups: [all] is visible to everyone"
    assert models & set(RESTRICTED) == allowed
    for model in RESTRICTED:
        before = len(mock.requests_for(model))
        response = call(server, key, model)
        if model in allowed:
            assert response.status_code == 200
            assert response.json()["model"] == model
        else:
            unknown = call(server, key, "team/no-such-model")
            assert response.status_code == unknown.status_code == 404
            assert response.json()["error"]["code"] == "model_not_found"
            assert response.json()["error"]["type"] == unknown.json()["error"]["type"]
            assert len(mock.requests_for(model)) == before, "no upstream call for a refusal"
        single = httpx.get(server.base_url + f"/models/{model}", headers={"x-api-key": key})
        assert single.status_code == (200 if model in allowed else 404)
