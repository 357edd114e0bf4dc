"""API key lifecycle: how keys arrive, expire, get revoked, and that secrets stay secret.

In process, but for what the CLI and the server's log show."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import openai
import pytest

from hepai_server.gateway import auth
from hepai_server.services import accounts
from tests.inprocess import Account, App
from tests.stack import Platform, Server

CHAT = {"model": "mock/chat", "messages": [{"role": "user", "content": "hi"}]}


async def chat(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/apiv2/chat/completions", headers=headers, json=CHAT)


async def test_bearer_and_x_api_key_both_authenticate(
    client: httpx.AsyncClient, account: Account
) -> None:
    assert (await chat(client, {"Authorization": f"Bearer {account.key}"})).status_code == 200
    assert (await chat(client, {"x-api-key": account.key})).status_code == 200


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
async def test_missing_or_unknown_keys_get_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await chat(client, headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert response.json()["detail"] == error["message"]
    assert (await client.get("/apiv2/models", headers=headers)).status_code == 401


async def test_hepai_style_client_without_key_gets_401(app: App) -> None:
    async with app.openai("NOT_GIVEN") as api:
        with pytest.raises(openai.AuthenticationError):
            await api.models.list()


async def test_revocation_takes_effect_on_the_next_request(
    app: App, client: httpx.AsyncClient, make_user
) -> None:
    user = make_user()
    _, other = app.platform.make_key(user.username, name="second")
    for _ in range(3):  # warm the app's key cache
        assert (await chat(client, {"x-api-key": user.key})).status_code == 200
    with app.platform.session() as session:  # as `hepai-server key revoke` does
        accounts.revoke_api_key(session, key_id=user.key_id)
    app.platform.callers_changed()
    response = await chat(client, {"x-api-key": user.key})
    assert response.status_code == 401
    assert (await chat(client, {"x-api-key": other})).status_code == 200, "only the revoked stops"


class TwoHoursLater:
    """The auth module's clock moved on: wall time two hours ahead, the cache's own unchanged."""

    monotonic = staticmethod(time.monotonic)

    @staticmethod
    def time() -> float:
        return time.time() + 2 * 3600


async def test_expired_key_gets_401_even_from_the_cache(
    client: httpx.AsyncClient, make_user, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_user(expires_in=timedelta(hours=1)).key
    assert (await chat(client, {"x-api-key": key})).status_code == 200  # now cached
    monkeypatch.setattr(auth, "time", TwoHoursLater)
    response = await chat(client, {"x-api-key": key})
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


async def test_key_limited_to_models(app: App, make_user) -> None:
    key = make_user(allowed_models=["mock/chat", "mock/embed"]).key
    async with app.openai(key) as api:
        assert {m.id async for m in api.models.list()} == {"mock/chat", "mock/embed"}
        with pytest.raises(openai.NotFoundError):
            await api.chat.completions.create(
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
    httpx.post(
        server.base_url + "/chat/completions",
        headers={"x-api-key": "sk-this-key-does-not-exist-0123456789"},
        json=CHAT,
    )
    log = server.logs()
    assert "sk-this-key-does-not-exist" not in log
    assert "upstream-secret-key" not in log
