"""The account API against a hostile key holder: inference-only keys stay out of the account
routes and worker registration, a key cannot be limited to models its owner may not call, and
password guesses through the API are throttled with the portal's own counters."""

from __future__ import annotations

import httpx
import sqlalchemy as sa

from tests.portal import Visitor
from tests.stack import Platform, Server
from tests.test_ddf import register
from tests.workers.registration import worker_info


def post(server: Server, key: str, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        server.base_url + path, headers={"authorization": f"Bearer {key}"}, json=body, timeout=30
    )


def scopes(platform: Platform, username: str) -> list[str]:
    engine = sa.create_engine(platform.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            return list(
                connection.execute(
                    sa.text(
                        "SELECT k.scope FROM api_keys k JOIN users u ON u.id = k.user_id "
                        "WHERE u.username = :u ORDER BY k.id"
                    ),
                    {"u": username},
                ).scalars()
            )
    finally:
        engine.dispose()


def key_count(platform: Platform, username: str) -> int:
    engine = sa.create_engine(platform.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            return connection.execute(
                sa.text(
                    "SELECT count(*) FROM api_keys k JOIN users u ON u.id = k.user_id "
                    "WHERE u.username = :u"
                ),
                {"u": username},
            ).scalar_one()
    finally:
        engine.dispose()


def test_an_inference_key_calls_models_but_not_the_account_routes_or_workers(
    platform: Platform, server: Server, unique
) -> None:
    admin = unique("scoped-admin")
    full = platform.create_user(admin, "--admin")
    inference = platform.create_key(admin, "--scope", "inference")
    chat = post(
        server,
        inference,
        "/chat/completions",
        {"model": "mock/chat", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 200
    for method, path, body in [
        ("GET", "/key/list_api_keys", None),
        ("POST", "/key/create_api_key", {"key_name": "more"}),
        ("GET", "/user/list_users", None),
        ("POST", "/user/create_user", {"username": unique("made"), "password": "a-password"}),
        ("POST", "/user/auth_user", {"username": admin, "password": "a-password"}),
        ("POST", "/worker/register_worker", worker_info(unique("scoped/tool"), unique("wk"))),
        ("POST", "/worker/stop_worker", {"worker_id": "wk-x"}),
    ]:
        answer = httpx.request(
            method,
            server.base_url + path,
            headers={"authorization": f"Bearer {inference}"},
            json=body,
        )
        assert answer.status_code == 403, (path, answer.text)
        assert "inference only" in answer.json()["error"]["message"]
    assert (
        httpx.get(
            server.base_url + "/key/list_api_keys", headers={"authorization": f"Bearer {full}"}
        ).status_code
        == 200
    )


def test_keys_made_through_the_api_are_inference_only_unless_asked(
    platform: Platform, server: Server, unique
) -> None:
    key = platform.create_user(unique("maker"))
    made = post(server, key, "/key/create_api_key", {"key_name": "laptop"}).json()["api_key"]
    listing = httpx.get(
        server.base_url + "/key/list_api_keys", headers={"authorization": f"Bearer {made}"}
    )
    assert listing.status_code == 403
    assert register(server, made, worker_info(unique("x/tool"), unique("wk"))).status_code == 403
    full = post(server, key, "/key/create_api_key", {"key_name": "ci", "scope": "full"})
    assert (
        register(
            server, full.json()["api_key"], worker_info(unique("x/tool"), unique("wk"))
        ).status_code
        == 200
    )
    bad = post(server, key, "/key/create_api_key", {"scope": "root"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "scope"


def test_a_key_cannot_be_limited_to_models_its_owner_may_not_call(
    platform: Platform, server: Server, unique
) -> None:
    """team/physics-only is for the physics group; a key naming it, or a model that does not
    exist, is refused naming them, and nothing is created."""
    owner = unique("limited")
    key = platform.create_user(owner)
    before = key_count(platform, owner)
    answer = post(
        server,
        key,
        "/key/create_api_key",
        {"allowed_models": ["mock/chat", "team/physics-only", "no/such-model"]},
    )
    assert answer.status_code == 403, answer.text
    message = answer.json()["error"]["message"]
    assert "team/physics-only" in message and "no/such-model" in message
    assert "mock/chat" not in message
    assert key_count(platform, owner) == before
    allowed = post(server, key, "/key/create_api_key", {"allowed_models": ["mock/chat"]})
    assert allowed.status_code == 200


def test_password_guesses_through_the_api_lock_the_portal_too(
    platform: Platform, server: Server, unique
) -> None:
    """After as many failures as the portal allows (5), both the API's check and the portal's
    sign-in answer 429 for that account from that address, the right password included."""
    victim = unique("victim")
    key = platform.create_user(victim)
    for _ in range(5):
        wrong = post(server, key, "/user/auth_user", {"username": victim, "password": "guess-1234"})
        assert wrong.status_code == 401
    right = post(server, key, "/user/auth_user", {"username": victim, "password": "a-password"})
    assert right.status_code == 429
    with Visitor(server.url) as visitor:
        assert visitor.sign_in(victim).status_code == 429


def test_portal_failures_lock_the_api_check_too(platform: Platform, server: Server, unique) -> None:
    victim = unique("victim")
    key = platform.create_user(victim)
    with Visitor(server.url) as visitor:
        for _ in range(5):
            assert visitor.sign_in(victim, "not-the-password").status_code == 401
    right = post(server, key, "/user/auth_user", {"username": victim, "password": "a-password"})
    assert right.status_code == 429


def test_a_right_password_through_the_api_forgives_earlier_mistakes(
    platform: Platform, server: Server, unique
) -> None:
    user = unique("forgetful")
    key = platform.create_user(user)
    for _ in range(4):
        assert (
            post(
                server, key, "/user/auth_user", {"username": user, "password": "x" * 9}
            ).status_code
            == 401
        )
    assert (
        post(
            server, key, "/user/auth_user", {"username": user, "password": "a-password"}
        ).status_code
        == 200
    )
    for _ in range(4):
        assert (
            post(
                server, key, "/user/auth_user", {"username": user, "password": "x" * 9}
            ).status_code
            == 401
        )


def test_keys_made_in_the_portal_are_inference_only_by_default(
    platform: Platform, server: Server, unique
) -> None:
    user = unique("clicker")
    platform.create_user(user)
    with Visitor(server.url) as visitor:
        visitor.sign_in(user)
        made = visitor.submit("/settings/keys", "/settings/keys", {"name": "laptop"})
        assert made.status_code in (201, 303)
        visitor.submit("/settings/keys", "/settings/keys", {"name": "ci", "scope": "full"})
    assert scopes(platform, user) == ["full", "inference", "full"]  # the CLI's, then the two
