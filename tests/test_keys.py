"""API key lifecycle: how keys arrive, expire, get revoked, and that secrets stay secret."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.stack import Platform, Server

CHAT = {"model": "mock/chat", "messages": [{"role": "user", "content": "hi"}]}


def chat(server: Server, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(server.base_url + "/chat/completions", headers=headers, json=CHAT)


def test_bearer_and_x_api_key_both_authenticate(server: Server, user_key: str) -> None:
    assert chat(server, {"Authorization": f"Bearer {user_key}"}).status_code == 200
    assert chat(server, {"x-api-key": user_key}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer NOT_GIVEN"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer sk-" + "x" * 43},
        {"x-api-key": "sk-unknown-key-that-was-never-issued"},
    ],
    ids=["missing", "not-given", "empty", "basic", "unknown", "unknown-x-api-key"],
)
def test_missing_or_unknown_keys_get_401(server: Server, headers: dict[str, str]) -> None:
    response = chat(server, headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert response.json()["detail"] == error["message"]
    assert httpx.get(server.base_url + "/models", headers=headers).status_code == 401


def test_hepai_style_client_without_key_gets_401(server: Server) -> None:
    api = server.openai("NOT_GIVEN")
    with pytest.raises(openai.AuthenticationError):
        api.models.list()


def test_revocation_takes_effect_on_the_next_request(
    platform: Platform, server: Server, unique
) -> None:
    user = unique("revokee")
    key = platform.create_user(user)
    other = platform.create_key(user, "--name", "second")
    for _ in range(3):  # warm the server's key cache
        assert chat(server, {"x-api-key": key}).status_code == 200
    platform.cli("key", "revoke", str(platform.key_id(key)))
    response = chat(server, {"x-api-key": key})
    assert response.status_code == 401
    assert chat(server, {"x-api-key": other}).status_code == 200, "only the revoked key stops"


def test_expired_key_gets_401(platform: Platform, server: Server, unique) -> None:
    user = unique("expiring")
    platform.cli("user", "create", user, input="a-password\n")
    # 0.00005 days is 4.32 seconds: long enough to use once, short enough to wait out.
    key = platform.create_key(user, "--expires-days", "0.00005")
    assert chat(server, {"x-api-key": key}).status_code == 200
    time.sleep(4.5)
    response = chat(server, {"x-api-key": key})
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_key_limited_to_models(platform: Platform, server: Server, unique) -> None:
    user = unique("limited")
    platform.cli("user", "create", user, input="a-password\n")
    key = platform.create_key(user, "--models", "mock/chat,mock/embed")
    api = server.openai(key)
    assert {m.id for m in api.models.list()} == {"mock/chat", "mock/embed"}
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(
            model="deepseek-ai/deepseek-r1:671b", messages=[{"role": "user", "content": "x"}]
        )


def test_keys_are_long_random_and_never_listed_or_stored(platform: Platform, unique) -> None:
    user = unique("secretive")
    key = platform.create_user(user)
    assert key.startswith("sk-") and len(key) >= 3 + 43
    assert len({platform.create_key(user) for _ in range(3)} | {key}) == 4
    listing = platform.cli("key", "list", "--user", user).stdout
    assert key not in listing and key[:10] in listing
    import sqlalchemy as sa

    engine = sa.create_engine(platform.sqlalchemy_url)
    with engine.connect() as connection:
        dump = " ".join(str(row) for row in connection.execute(sa.text("SELECT * FROM api_keys")))
    engine.dispose()
    assert key not in dump and key[10:] not in dump


def test_secrets_never_reach_the_server_log(platform: Platform, server: Server) -> None:
    chat(server, {"x-api-key": "sk-this-key-does-not-exist-0123456789"})
    log = server.logs()
    assert "sk-this-key-does-not-exist" not in log
    assert "upstream-secret-key" not in log
