"""Single sign-on against a real OpenID Connect provider process (the mock in
hepai_server.testing): accounts made on first sign-in, groups and admin level from the token,
and every way a forged or replayed answer is refused."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.conftest import CHROMIUM
from tests.portal import Visitor
from tests.stack import Platform, Server, free_port, stop, wait_until_up

CLIENT_ID, CLIENT_SECRET = "hepai-portal", "portal-secret-0123"
USERS = {
    "alice": {"sub": "idp-alice", "email": "alice@ihep.example", "groups": ["physics", "staff"]},
    "boss": {"sub": "idp-boss", "email": "boss@ihep.example", "groups": ["/hep-admins"]},
    "carol": {"sub": "idp-carol", "email": "carol@ihep.example", "groups": []},
    "dave": {"sub": "idp-dave", "email": "dave@ihep.example", "groups": []},
    # A group path with a slash inside, which is no group name here, still makes an admin.
    "olga": {"sub": "idp-olga", "email": "olga@ihep.example", "groups": ["/org/ai-admins"]},
    # An address the provider has not verified is not taken.
    "eve": {"sub": "idp-eve", "email": "alice@ihep.example", "email_verified": False},
    # A name in Chinese: the username comes from the address.
    "张伟": {"sub": "idp-zw", "email": "zhangwei@ihep.example", "groups": []},
}


@contextmanager
def identity_provider(tmp: Path) -> Iterator[str]:
    users = tmp / "idp-users.json"
    users.write_text(json.dumps(USERS))
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hepai_server.testing.mock_oidc",
            "--port",
            str(port),
            "--users",
            str(users),
            "--client-id",
            CLIENT_ID,
            "--client-secret",
            CLIENT_SECRET,
        ]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/jwks", process)
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with identity_provider(tmp_path_factory.mktemp("idp")) as url:
        yield url


@pytest.fixture(scope="module")
def sso_server(platform: Platform, idp: str) -> Iterator[Server]:
    env = {
        "HEPAI_SERVER_OIDC_ISSUER": idp,
        "HEPAI_SERVER_OIDC_CLIENT_ID": CLIENT_ID,
        "HEPAI_SERVER_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "HEPAI_SERVER_OIDC_DISPLAY_NAME": "IHEP SSO",
        "HEPAI_SERVER_OIDC_ADMIN_GROUPS": '["hep-admins", "org/ai-admins"]',
    }
    with platform.serve(env=env) as server:
        yield server


def through_provider(visitor: Visitor, idp: str, username: str) -> httpx.Response:
    """Start at the portal, sign in at the provider as ``username``, return the callback's
    answer (which the browser would follow)."""
    start = visitor.get("/login/sso?next=/usage")
    assert start.status_code == 303 and start.headers["location"].startswith(idp + "/authorize")
    form = httpx.get(start.headers["location"]).text
    fields = {
        html.unescape(name): html.unescape(value)
        for name, value in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form)
    }
    back = httpx.post(idp + "/authorize", data={**fields, "username": username})
    assert back.status_code == 302
    callback = urlsplit(back.headers["location"])
    return visitor.get(f"{callback.path}?{callback.query}")


def test_first_sign_in_makes_the_account_with_the_providers_groups(
    sso_server: Server, platform: Platform, idp: str
) -> None:
    with Visitor(sso_server.url) as visitor:
        assert "Sign in with IHEP SSO" in visitor.get("/login").text
        answer = through_provider(visitor, idp, "alice")
        assert answer.status_code == 303 and answer.headers["location"] == "/usage"
        models = visitor.get("/models").text
        assert "alice" in models and 'data-model="team/physics-only"' in models
        assert visitor.get("/admin/users").status_code == 403
    users = platform.cli("user", "list").stdout
    (alice,) = [line for line in users.splitlines() if line.startswith("alice\t")]
    assert alice.split("\t")[2] == "physics,staff" and "alice@ihep.example" in alice
    # The provider sent PKCE's verifier with the code.
    (request, *_) = httpx.get(idp + "/_mock/tokens").json()
    assert request["code_verifier"] and request["grant_type"] == "authorization_code"

    with Visitor(sso_server.url) as again:
        through_provider(again, idp, "alice")
        assert "data-sso-only" in again.get("/settings/password").text
    assert platform.cli("user", "list").stdout.count("alice@ihep.example") == 1


def test_members_of_the_admin_groups_become_admins(sso_server: Server, idp: str) -> None:
    for admin in ("boss", "olga"):
        with Visitor(sso_server.url) as visitor:
            through_provider(visitor, idp, admin)
            assert visitor.get("/admin/users").status_code == 200, admin


def test_unverified_addresses_are_not_taken_and_other_scripts_get_a_usable_name(
    sso_server: Server, platform: Platform, idp: str
) -> None:
    with Visitor(sso_server.url) as visitor:
        through_provider(visitor, idp, "eve")
    with Visitor(sso_server.url) as visitor:
        through_provider(visitor, idp, "张伟")
    users = platform.cli("user", "list").stdout.splitlines()
    (eve,) = [line for line in users if line.startswith("eve\t")]
    assert eve.split("\t")[3] == "-"  # no e-mail: alice's address was not verified for eve
    assert any(line.startswith("zhangwei\t") for line in users)


def test_a_local_account_with_the_same_name_is_never_taken_over(
    sso_server: Server, platform: Platform, idp: str
) -> None:
    platform.create_user("carol")
    with Visitor(sso_server.url) as visitor:
        through_provider(visitor, idp, "carol")
        assert "carol-2" in visitor.get("/models").text
    with Visitor(sso_server.url) as local:
        assert local.sign_in("carol").status_code == 303
        assert "carol-2" not in local.get("/models").text


def test_forged_replayed_and_refused_answers_sign_nobody_in(sso_server: Server, idp: str) -> None:
    with Visitor(sso_server.url) as visitor:
        start = visitor.get("/login/sso")
        state = re.search(r"state=([^&]+)", start.headers["location"]).group(1)
        # Someone else's code, or a state that is not this browser's attempt.
        assert visitor.get("/login/sso/callback?code=x&state=forged").status_code == 401
        # An answer without the browser's attempt cookie.
        with Visitor(sso_server.url) as stranger:
            refused = stranger.get(f"/login/sso/callback?code=x&state={state}")
            assert refused.status_code == 401
            assert stranger.get("/models").status_code == 303
        # The provider refused (unknown user).
        assert through_provider(visitor, idp, "mallory").status_code == 401
        assert visitor.get("/models").status_code == 303

    with Visitor(sso_server.url) as visitor:
        start = visitor.get("/login/sso")
        form = httpx.get(start.headers["location"]).text
        fields = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form))
        back = httpx.post(idp + "/authorize", data={**fields, "username": "dave"})
        callback = urlsplit(back.headers["location"])
        assert visitor.get(f"{callback.path}?{callback.query}").status_code == 303
        # The same code again, in a browser that has started an attempt of its own.
        with Visitor(sso_server.url) as replay:
            replay.get("/login/sso")
            assert replay.get(f"{callback.path}?{callback.query}").status_code == 401


def test_a_disabled_sso_account_is_refused(
    sso_server: Server, platform: Platform, idp: str, unique: Callable[[str], str]
) -> None:
    with Visitor(sso_server.url) as visitor:
        through_provider(visitor, idp, "dave")
    admin = unique("sso-admin")
    platform.create_user(admin, "--admin")
    with Visitor(sso_server.url) as visitor:
        visitor.sign_in(admin)
        page = visitor.get("/admin/users").text
        dave_id = re.search(r'<tr data-user="dave">.*?action="/admin/users/(\d+)"', page, re.S)
        assert dave_id
        visitor.submit("/admin/users", f"/admin/users/{dave_id.group(1)}", {"action": "disable"})
    with Visitor(sso_server.url) as visitor:
        assert through_provider(visitor, idp, "dave").status_code == 403
        assert visitor.get("/models").status_code == 303


def test_sso_in_the_browser(
    sso_server: Server, idp: str, artifacts: Path, platform: Platform
) -> None:
    with sync_playwright() as playwright:
        browser: Browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(locale="en-US")
            page.goto(sso_server.url + "/models")
            page.get_by_role("link", name="Sign in with IHEP SSO").click()
            expect(page.get_by_role("heading", name="Institute sign-in")).to_be_visible()
            page.get_by_label("Institute account").fill("alice")
            page.get_by_role("button", name="Continue").click()
            expect(page).to_have_url(sso_server.url + "/models")
            expect(page.locator("details.avatar summary")).to_contain_text("alice")
            backend = "postgres" if platform.database_url else "sqlite"
            page.goto(sso_server.url + "/login")
            page.screenshot(path=artifacts / "portal" / f"models-after-sso-{backend}.png")
        finally:
            browser.close()
