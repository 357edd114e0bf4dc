"""The hepai client's account API: /key/* and /user/*, with the admin rules and exact shapes."""

from __future__ import annotations

import re

import httpx
import pytest
from hepai.components.haiddf.hclient._exceptions import HAPIStatusError

from tests.portal import Visitor
from tests.stack import Platform, Server


def chat_status(server: Server, key: str) -> int:
    return httpx.post(
        server.base_url + "/chat/completions",
        headers={"x-api-key": key},
        json={"model": "mock/chat", "messages": [{"role": "user", "content": "hi"}]},
    ).status_code


def test_users_manage_their_own_keys(platform: Platform, server: Server, unique) -> None:
    name = unique("self-service")
    client = server.hepai(platform.create_user(name))
    created = client.create_api_key(key_name="laptop", valid_time=7, allowed_models="all")
    assert created.api_key.startswith("sk-") and created.alias == "laptop"
    assert created.username == name and created.expiration_time is not None
    assert chat_status(server, created.api_key) == 200
    listed = client.list_api_keys()
    assert {row.alias for row in listed.data} >= {"laptop", "default"}
    assert all(row.username == name for row in listed.data), "only my own keys"
    assert all(not row.api_key.startswith(created.api_key) for row in listed.data)
    deleted = client.delete_api_key(created.id)
    assert deleted.deleted is True and deleted.id == created.id
    assert chat_status(server, created.api_key) == 401, "deletion takes effect at once"


def test_keys_limited_by_allowed_models(platform: Platform, server: Server, unique) -> None:
    client = server.hepai(platform.create_user(unique("narrow")))
    narrow = client.create_api_key(allowed_models={"models": ["mock/embed"]})
    assert narrow.allowed_models == {"models": ["mock/embed"]}
    assert chat_status(server, narrow.api_key) == 404


def test_ordinary_users_cannot_act_for_others(platform: Platform, server: Server, unique) -> None:
    client = server.hepai(platform.create_user(unique("ordinary")))
    other = server.hepai(platform.create_user(unique("other")))
    other_key = other.list_api_keys().data[0]
    for call in (
        lambda: client.create_api_key(user_id=other_key.user_id),
        lambda: client.list_users(),
        lambda: client.create_user(username="nope", password="x"),
        lambda: client.delete_user(other_key.user_id),
        lambda: client.fetch_api_key(username="anyone"),
    ):
        with pytest.raises(HAPIStatusError) as caught:
            call()
        assert caught.value.status_code == 403
    with pytest.raises(HAPIStatusError) as caught:
        client.delete_api_key(other_key.id)
    assert caught.value.status_code == 404, "someone else's key looks like no key"


def test_admin_manages_users_and_their_keys(platform: Platform, server: Server, unique) -> None:
    root = unique("root")
    admin = server.hepai(platform.create_user(root, "--admin"))
    name = unique("hired")
    user = admin.create_user(
        username=name,
        password="s3cret-pass",
        user_level="member",
        user_groups=["physics"],
        email=f"{name}@ihep.ac.cn",
    )
    assert user.username == name and user.password is None
    assert user.user_groups[0].name == "physics" and str(user.user_level) == "member"
    assert name in {row.username for row in admin.list_users().data}
    assert admin.auth_user(username=name, password="s3cret-pass").username == name
    with pytest.raises(HAPIStatusError) as caught:
        admin.auth_user(username=name, password="wrong")
    assert caught.value.status_code == 401
    fetched = admin.fetch_api_key(username=f"{name}@ihep.ac.cn")
    assert fetched.username == name and chat_status(server, fetched.api_key) == 200
    for_user = admin.create_api_key(user_id=user.id, key_name="issued")
    assert for_user.username == name
    deleted = admin.delete_user(user.id)
    assert deleted.deleted is True and deleted.username == name
    assert chat_status(server, fetched.api_key) == 401, "a deleted user's keys stop at once"

    # What the admin did to the other account is in the portal's audit log.
    with Visitor(server.url) as visitor:
        visitor.sign_in(root)
        audit = visitor.get("/admin/audit").text
    rows = [row for row in audit.split("<tr data-action=")[1:] if f">{name}</td>" in row]
    actions = sorted(re.match(r'"([a-z_.]+)"', row).group(1) for row in rows)
    assert actions == ["key.create_for_user", "key.fetch_for_user", "user.create", "user.disable"]
    assert all(f">{root}</td>" in row and "</span> api</li>" in row for row in rows)


def test_verify_api_key_answers_in_text(platform: Platform, server: Server, unique) -> None:
    key = platform.create_user(unique("verifier"))
    client = server.hepai(key)
    assert client.verify_api_key(key) == "valid"
    with pytest.raises(HAPIStatusError) as caught:
        client.verify_api_key("sk-" + "n" * 43)
    assert caught.value.status_code == 401


def test_account_payloads_have_exactly_the_sdk_keys(
    platform: Platform, server: Server, unique
) -> None:
    admin_key = platform.create_user(unique("shape-admin"), "--admin")
    keys = httpx.get(server.base_url + "/key/list_api_keys", headers={"x-api-key": admin_key})
    users = httpx.get(server.base_url + "/user/list_users", headers={"x-api-key": admin_key})
    page_keys = {
        "object",
        "data",
        "first_id",
        "last_id",
        "has_more",
        "offset",
        "total",
        "page_number",
    }
    for response in (keys, users):
        assert response.status_code == 200 and set(response.json()) <= page_keys
    key_fields = {
        "id",
        "api_key",
        "alias",
        "user_id",
        "username",
        "expiration_time",
        "usage_description",
        "create_time",
        "created_by",
        "update_time",
        "updated_by",
        "allowed_models",
        "remarks",
        "app_group",
        "del_flag",
    }
    assert all(set(row) == key_fields for row in keys.json()["data"])
    # A listed key shows its prefix only: never the secret.
    assert all(
        row["api_key"].endswith("…") and len(row["api_key"]) <= 11 for row in keys.json()["data"]
    )
    assert all(row["password"] is None for row in users.json()["data"])
