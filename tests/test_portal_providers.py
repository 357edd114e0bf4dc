"""Admin → providers and model permissions: a provider added in the portal serves its models at
once (in every process), its key is never shown or stored in the clear, and permissions set
here decide who may call a model."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import openai
import pytest
import sqlalchemy as sa

from tests.portal import Visitor
from tests.stack import UPSTREAM_KEY, MockProcess, Platform, Server


def add_provider(
    visitor: Visitor, name: str, mock: MockProcess, models: str, *, groups: str = "all"
) -> httpx.Response:
    return visitor.submit(
        "/admin/providers",
        "/admin/providers",
        {
            "name": name,
            "base_url": mock.url + "/v1",
            "api_key": UPSTREAM_KEY,
            "models": models,
            "groups": groups,
        },
    )


def provider_id(visitor: Visitor, name: str) -> int:
    page = visitor.get("/admin/providers").text
    found = re.search(
        rf'<tr data-provider="{re.escape(name)}".*?action="/admin/providers/(\d+)"', page, re.S
    )
    assert found, f"{name} is not listed"
    return int(found.group(1))


def act(visitor: Visitor, name: str, action: str, **fields: str) -> httpx.Response:
    target = f"/admin/providers/{provider_id(visitor, name)}"
    return visitor.submit("/admin/providers", target, {"action": action, **fields})


def chat(server: Server, key: str, model: str) -> str:
    reply = server.openai(key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}]
    )
    return reply.choices[0].message.content or ""


@pytest.fixture
def admin(platform: Platform, server: Server, unique: Callable[[str], str]) -> Visitor:
    name = unique("provider-admin")
    platform.create_user(name, "--admin")
    visitor = Visitor(server.url)
    visitor.sign_in(name)
    return visitor


def test_a_provider_added_in_the_portal_serves_and_keeps_its_key_secret(
    platform: Platform,
    server: Server,
    mock: MockProcess,
    admin: Visitor,
    user_key: str,
    unique: Callable[[str], str],
) -> None:
    name, model = unique("lab-cloud"), unique("lab/chat")
    with admin:
        assert add_provider(admin, name, mock, f"{model} chat-upstream chat").status_code == 303
        assert chat(server, user_key, model)
        assert model in {m.id for m in server.openai(user_key).models.list()}

        page = admin.get("/admin/providers").text
        assert UPSTREAM_KEY not in page and "set (hidden)" in page
        assert UPSTREAM_KEY not in admin.get("/admin/audit").text
        engine = sa.create_engine(platform.sqlalchemy_url)
        with engine.connect() as connection:
            sealed = connection.execute(
                sa.text("SELECT api_key_sealed FROM providers WHERE name = :n"), {"n": name}
            ).scalar_one()
        engine.dispose()
        assert sealed and UPSTREAM_KEY not in sealed

        assert act(admin, name, "test").status_code == 303
        tested = admin.get("/admin/providers").text
        assert "answered with its model list" in tested and 'data-health="ok"' in tested
        # The last result is kept: it is there on the next visit too, the notice is not.
        again = admin.get("/admin/providers").text
        assert 'data-health="ok"' in again and "answered with its model list" not in again

        # "Fetch models" adds what the provider lists and the stored provider lacks.
        assert act(admin, name, "fetch").status_code == 303
        fetched = admin.get("/admin/providers").text
        assert "lists 3 models; 2 new ones were added" in fetched
        assert "<code>embed-upstream</code>" in fetched

        act(admin, name, "rekey", api_key="not-the-right-key")
        act(admin, name, "test")
        tested = admin.get("/admin/providers").text
        assert 'data-health="refused"' in tested and "HTTP 401" in tested
        assert "Incorrect API key" not in tested  # the upstream's answer never reaches the page
        with pytest.raises(openai.APIStatusError):
            chat(server, user_key, model)
        act(admin, name, "rekey", api_key=UPSTREAM_KEY)
        assert chat(server, user_key, model)

        act(admin, name, "disable")
        with pytest.raises(openai.NotFoundError):
            chat(server, user_key, model)
        act(admin, name, "enable")
        assert chat(server, user_key, model)
        act(admin, name, "delete")
        with pytest.raises(openai.NotFoundError):
            chat(server, user_key, model)
        assert f'data-provider="{name}"' not in admin.get("/admin/providers").text
    assert UPSTREAM_KEY not in server.logs()


def test_bad_providers_are_refused_with_a_reason(
    mock: MockProcess, admin: Visitor, unique: Callable[[str], str]
) -> None:
    with admin:
        clash = add_provider(admin, "mock", mock, unique("x/y"))
        assert clash.status_code == 400 and "exists already" in clash.text
        nothing = add_provider(admin, unique("empty"), mock, "  \n ")
        assert nothing.status_code == 400 and "one model per line" in nothing.text
        nowhere = admin.submit(
            "/admin/providers",
            "/admin/providers",
            {"name": unique("nowhere"), "models": "a/b", "groups": "all"},
        )
        assert nowhere.status_code == 400 and "base URL" in nowhere.text
        for base_url, rule in [
            (f"http://user:secret@127.0.0.1:{mock.port}/v1", "user name or password"),
            (f"{mock.url}/v1?redirect=elsewhere", "query"),
            (f"file://{mock.url}/v1", "http or https"),
        ]:
            refused = admin.submit(
                "/admin/providers",
                "/admin/providers",
                {"name": unique("odd"), "base_url": base_url, "models": "a/b", "groups": "all"},
            )
            assert refused.status_code == 400 and rule in refused.text, base_url


@pytest.mark.both_databases
def test_permissions_set_in_the_portal_decide_who_may_call_a_model(
    platform: Platform,
    server: Server,
    mock: MockProcess,
    admin: Visitor,
    unique: Callable[[str], str],
) -> None:
    group = unique("optics")
    insider_key = platform.create_user(unique("insider"), "--group", group)
    outsider_name = unique("outsider")
    outsider_key = platform.create_user(outsider_name)
    model = unique("lab/restricted")
    with admin:
        add_provider(admin, unique("lab"), mock, f"{model} chat-upstream", groups=group)
        assert chat(server, insider_key, model)
        with pytest.raises(openai.NotFoundError):
            chat(server, outsider_key, model)
        admin.submit(
            "/admin/models",
            "/admin/models",
            {"model": model, "groups": group, "users": outsider_name},
        )
        assert chat(server, outsider_key, model)

        # A config-file model: restricted here, then back to the file's "all".
        try:
            admin.submit(
                "/admin/models", "/admin/models", {"model": "mock/complete", "groups": group}
            )
            with pytest.raises(openai.NotFoundError):
                server.openai(outsider_key).completions.create(model="mock/complete", prompt="x")
            page = admin.get("/admin/models").text
            assert re.search(r'data-model="mock/complete".*?set here', page, re.S)
        finally:
            admin.submit(
                "/admin/models", "/admin/models", {"model": "mock/complete", "action": "reset"}
            )
        assert server.openai(outsider_key).completions.create(model="mock/complete", prompt="x")


def test_every_process_serves_a_change_made_in_one(
    platform: Platform, mock: MockProcess, unique: Callable[[str], str]
) -> None:
    name, model = unique("spread"), unique("spread/chat")
    admin = unique("spread-admin")
    platform.create_user(admin, "--admin")
    key = platform.create_key(admin)
    with platform.serve("--workers", "2") as server, Visitor(server.url) as visitor:
        visitor.sign_in(admin)
        add_provider(visitor, name, mock, f"{model} chat-upstream")
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        # The other process notices within half a second: poll until 20 calls in a row, each
        # on a fresh connection (so both processes answer some), are served.
        deadline = time.monotonic() + 30
        while True:
            statuses = {
                httpx.post(
                    server.base_url + "/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {key}"},
                ).status_code
                for _ in range(20)
            }
            if statuses == {200} or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert statuses == {200}


def test_only_admins_manage_providers_and_permissions(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    member = unique("provider-member")
    platform.create_user(member)
    with Visitor(server.url) as visitor:
        visitor.sign_in(member)
        for page in ("/admin/providers", "/admin/models"):
            assert visitor.get(page).status_code == 403
        for action, fields in (
            ("/admin/providers", {"name": "x", "models": "a/b"}),
            ("/admin/providers/1", {"action": "delete"}),
            ("/admin/models", {"model": "mock/chat", "groups": "nobody"}),
        ):
            assert visitor.submit("/settings/keys", action, fields).status_code == 403


@pytest.mark.both_databases
def test_a_new_provider_never_widens_who_may_use_an_existing_model(
    platform: Platform,
    server: Server,
    mock: MockProcess,
    admin: Visitor,
    unique: Callable[[str], str],
) -> None:
    group = unique("closed")
    outsider_key = platform.create_user(unique("outsider"))
    model = unique("lab/closed")
    with admin:
        add_provider(admin, unique("first"), mock, f"{model} chat-upstream", groups=group)
        with pytest.raises(openai.NotFoundError):
            chat(server, outsider_key, model)
        # A second deployment of the same model, with the form's default "all".
        add_provider(admin, unique("second"), mock, f"{model} chat-upstream")
        with pytest.raises(openai.NotFoundError):
            chat(server, outsider_key, model)
        # Reset to no permission of its own: a stored provider's model is for admins only.
        admin.submit("/admin/models", "/admin/models", {"model": model, "action": "reset"})
        with pytest.raises(openai.NotFoundError):
            chat(server, outsider_key, model)
        refused = admin.submit(
            "/admin/models", "/admin/models", {"model": model, "groups": "bad group!"}
        )
        assert refused.status_code == 400
