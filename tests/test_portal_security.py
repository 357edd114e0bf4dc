"""The portal's defences without a browser: what the session cookie and the database hold,
sign-in that tells nothing and slows guessing down, sessions that end when they should, forms
that need their session's token and this site's origin, admin pages for admins only, redirects
that stay on the site, and secrets that are shown once and kept nowhere."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import openai
import pytest
import sqlalchemy as sa

from tests.portal import Visitor, csrf_token
from tests.stack import Platform, Server

SESSION_COOKIE = "hepai_session"
SIGN_IN_COOKIE = "hepai_signin"
EVIL = "http://evil.example"
SECRET_FIELD = re.compile(r'id="flash-secret" readonly value="([^"]+)"')


def query(platform: Platform, sql: str, **params: object) -> list[dict[str, Any]]:
    engine = sa.create_engine(platform.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def account(platform: Platform, username: str) -> dict[str, Any]:
    rows = query(
        platform,
        "SELECT id, level, disabled, password_hash FROM users WHERE username = :name",
        name=username,
    )
    assert len(rows) == 1, rows
    return rows[0]


def sessions_of(platform: Platform, username: str) -> list[dict[str, Any]]:
    return query(
        platform,
        "SELECT s.* FROM web_sessions s JOIN users u ON u.id = s.user_id WHERE u.username = :name",
        name=username,
    )


def make_user(
    platform: Platform, username: str, *options: str, password: str = "a-password"
) -> str:
    platform.cli("user", "create", username, *options, input=password + "\n")
    return username


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """The Set-Cookie headers of a response by cookie name, each header whole."""
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


def post_sign_in(
    visitor: Visitor, username: str, password: str = "a-password", next: str | None = None
) -> httpx.Response:
    """Fill in and send the sign-in form as a browser would (token from the page and cookie)."""
    token = csrf_token(visitor.get("/login").text)
    fields = {"csrf_token": token, "username": username, "password": password}
    if next is not None:
        fields["next"] = next
    return visitor.client.post("/login", data=fields)


def create_in_portal(admin: Visitor, username: str) -> None:
    """An ordinary account made by a signed-in admin, with the usual test password."""
    fields: dict[str, object] = {
        "username": username,
        "password": "a-password",
        "level": "user",
        "groups": "",
    }
    assert admin.submit("/admin/users", "/admin/users", fields).status_code == 303


def is_login_redirect(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"].startswith("/login")


def key_rows(page: str) -> int:
    return page.count("data-key-id=")


def stays_on_site(location: str) -> bool:
    """Whether a browser following ``location`` stays on this site: browsers drop tabs and
    newlines and read a backslash as a slash before they resolve a URL."""
    cleaned = re.sub(r"[\t\n\r]", "", location).replace("\\", "/")
    parts = urlsplit(cleaned)
    return cleaned.startswith("/") and not parts.scheme and not parts.netloc


def test_the_session_cookie_is_http_only_and_lax_and_the_database_keeps_only_its_hash(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    username = make_user(platform, unique("cookie"))
    with Visitor(server.url) as visitor:
        form = visitor.get("/login")
        signin_cookie = set_cookies(form)[SIGN_IN_COOKIE].lower()
        assert "httponly" in signin_cookie and "samesite=lax" in signin_cookie
        signed_in = post_sign_in(visitor, username)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
        header = set_cookies(signed_in)[SESSION_COOKIE]
        attributes = [part.strip().lower() for part in header.split(";")[1:]]
        assert "httponly" in attributes
        assert "samesite=lax" in attributes
        assert "secure" not in attributes  # plain http: a Secure cookie would never come back
        assert "path=/" in attributes
        token = visitor.client.cookies[SESSION_COOKIE]
        assert len(token) >= 32
        assert visitor.get("/models").status_code == 200

    rows = sessions_of(platform, username)
    assert len(rows) == 1
    assert rows[0]["id"] == hashlib.sha256(token.encode()).hexdigest()
    assert all(token not in str(value) for value in rows[0].values())
    assert query(platform, "SELECT id FROM web_sessions WHERE id = :token", token=token) == []


@pytest.mark.parametrize(
    "path",
    [
        "/models",
        "/settings/keys",
        "/settings/password",
        "/usage",
        "/usage?days=7&model=mock/chat",
        "/usage.csv",
        "/files",
        "/admin",
        "/admin/users",
        "/admin/audit",
    ],
)
def test_every_page_sends_a_visitor_without_a_session_to_sign_in(server: Server, path: str) -> None:
    expected = "/login?next=" + quote(path, safe="")
    with httpx.Client(base_url=server.url) as client:
        anonymous = client.get(path)
        assert anonymous.status_code == 303
        assert anonymous.headers["location"] == expected
        assert SESSION_COOKIE not in set_cookies(anonymous)
    # A cookie naming no session is no better than none.
    forged = {SESSION_COOKIE: secrets.token_urlsafe(32)}
    with httpx.Client(base_url=server.url, cookies=forged) as client:
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == expected


def test_a_wrong_password_and_an_unknown_user_look_the_same(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    known = make_user(platform, unique("known"))
    ghost = unique("ghost")

    def attempt(username: str) -> tuple[int, str, set[str]]:
        with Visitor(server.url) as visitor:
            answer = post_sign_in(visitor, username, "not-the-password")
        token = csrf_token(answer.text)
        assert answer.text.count(username) == 1  # echoed in the username field, nowhere else
        page = answer.text.replace(token, "TOKEN").replace(username, "USERNAME")
        return answer.status_code, page, set(set_cookies(answer))

    wrong_password, unknown_user = attempt(known), attempt(ghost)
    assert wrong_password[0] == unknown_user[0] == 401
    assert wrong_password[1] == unknown_user[1]
    assert wrong_password[2] == unknown_user[2] == {SIGN_IN_COOKIE}
    assert 'role="alert"' in wrong_password[1]


MAX_FAILURES = 3


@pytest.fixture(scope="module")
def strict_server(platform: Platform) -> Iterator[Server]:
    """A server of the platform that blocks a username after three failed sign-ins."""
    with platform.serve(env={"HEPAI_SERVER_LOGIN_MAX_FAILURES": str(MAX_FAILURES)}) as running:
        yield running


def test_repeated_failures_block_even_the_right_password_for_that_username_only(
    platform: Platform, strict_server: Server, unique: Callable[[str], str]
) -> None:
    target = make_user(platform, unique("guessed"))
    bystander = make_user(platform, unique("bystander"))
    url = strict_server.url
    with Visitor(url) as visitor:
        # Below the limit the right password still works, and clears the failures.
        for _ in range(MAX_FAILURES - 1):
            assert post_sign_in(visitor, target, "guess").status_code == 401
        assert post_sign_in(visitor, target).status_code == 303
    with Visitor(url) as visitor:
        for _ in range(MAX_FAILURES):
            assert post_sign_in(visitor, target, "guess").status_code == 401
        blocked = post_sign_in(visitor, target)
        assert blocked.status_code == 429
        assert SESSION_COOKIE not in set_cookies(blocked)
        assert SESSION_COOKIE not in visitor.client.cookies
        assert post_sign_in(visitor, target, "another-guess").status_code == 429
        assert is_login_redirect(visitor.get("/models"))
    assert len(sessions_of(platform, target)) == 1  # the one from before the block
    with Visitor(url) as visitor:
        assert post_sign_in(visitor, bystander).status_code == 303
        assert visitor.get("/models").status_code == 200


def test_guessing_from_elsewhere_does_not_lock_the_owner_out(
    platform: Platform, strict_server: Server, unique: Callable[[str], str]
) -> None:
    target = make_user(platform, unique("popular"))
    # The server trusts X-Forwarded-For from its loopback proxy: two addresses.
    with Visitor(strict_server.url) as attacker:
        attacker.client.headers["x-forwarded-for"] = "203.0.113.9"
        for _ in range(MAX_FAILURES):
            assert post_sign_in(attacker, target, "guess").status_code == 401
        assert post_sign_in(attacker, target).status_code == 429
    with Visitor(strict_server.url) as owner:
        owner.client.headers["x-forwarded-for"] = "198.51.100.7"
        assert post_sign_in(owner, target).status_code == 303


def test_a_second_sign_in_tab_does_not_spoil_the_first(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    username = make_user(platform, unique("two-tabs"))
    with Visitor(server.url) as visitor:
        first = csrf_token(visitor.get("/login").text)
        visitor.get("/login")  # the same browser opens the sign-in page again
        fields = {"csrf_token": first, "username": username, "password": "a-password"}
        assert visitor.client.post("/login", data=fields).status_code == 303


def test_forms_through_a_proxy_that_rewrites_the_host_are_accepted(
    platform: Platform, unique: Callable[[str], str]
) -> None:
    username = make_user(platform, unique("proxied"))
    # Plain http, so the test client keeps the cookies (over https they are Secure).
    public = {"HEPAI_SERVER_PUBLIC_URL": "http://ai.example.org"}
    with platform.serve(env=public) as proxied, Visitor(proxied.url) as visitor:
        token = csrf_token(visitor.get("/login").text)
        fields = {"csrf_token": token, "username": username, "password": "a-password"}
        elsewhere = visitor.client.post(
            "/login", data=fields, headers={"origin": "http://evil.example"}
        )
        assert elsewhere.status_code == 403
        signed_in = visitor.client.post(
            "/login", data=fields, headers={"origin": "http://ai.example.org"}
        )
        assert signed_in.status_code == 303


# Before attempts were counted first and taken in turn, 10 parallel wrong guesses with a limit
# of 3 got eight passwords checked.
@pytest.mark.both_databases
def test_guesses_sent_at_once_still_get_no_more_tries_than_the_limit(
    platform: Platform, strict_server: Server, unique: Callable[[str], str]
) -> None:
    target = make_user(platform, unique("raced"))
    attempts = 10
    visitors = [Visitor(strict_server.url) for _ in range(attempts)]
    try:
        tokens = [csrf_token(visitor.get("/login").text) for visitor in visitors]
        start = threading.Barrier(attempts)

        def guess(n: int) -> int:
            fields = {"csrf_token": tokens[n], "username": target, "password": f"guess-{n}"}
            start.wait(timeout=30)
            return visitors[n].client.post("/login", data=fields).status_code

        with ThreadPoolExecutor(attempts) as pool:
            answers = list(pool.map(guess, range(attempts)))
    finally:
        for visitor in visitors:
            visitor.client.close()
    assert set(answers) <= {401, 429}
    assert answers.count(401) <= MAX_FAILURES, sorted(answers)
    with Visitor(strict_server.url) as visitor:
        assert post_sign_in(visitor, target).status_code == 429


def test_signing_out_ends_the_session_on_the_server(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    username = make_user(platform, unique("leaver"))
    with Visitor(server.url) as visitor:
        visitor.sign_in(username)
        old = visitor.client.cookies[SESSION_COOKIE]
        out = visitor.submit("/models", "/logout", {})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert is_login_redirect(visitor.get("/models"))
    with httpx.Client(base_url=server.url, cookies={SESSION_COOKIE: old}) as replay:
        again = replay.get("/settings/keys")
        assert again.status_code == 303
        assert again.headers["location"] == "/login?next=%2Fsettings%2Fkeys"
    assert sessions_of(platform, username) == []


def test_a_new_password_ends_the_other_sessions_and_keeps_this_browser_signed_in(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    username = make_user(platform, unique("changer"))
    new_password = "a-new-password-" + secrets.token_hex(4)
    page = "/settings/password"
    with Visitor(server.url) as changer, Visitor(server.url) as other:
        changer.sign_in(username)
        other.sign_in(username)
        before = account(platform, username)["password_hash"]

        refused: list[dict[str, object]] = [
            {"current": "a-password", "new": new_password, "repeat": new_password + "x"},
            {"current": "not-my-password", "new": new_password, "repeat": new_password},
            {"current": "a-password", "new": "short", "repeat": "short"},
        ]
        for fields in refused:
            answer = changer.submit(page, page, fields)
            assert answer.status_code == 400, fields
            assert 'role="alert"' in answer.text
        assert account(platform, username)["password_hash"] == before
        assert other.get("/models").status_code == 200

        old_cookie = changer.client.cookies[SESSION_COOKIE]
        old_token = csrf_token(changer.get("/settings/keys").text)
        changed = changer.submit(
            page, page, {"current": "a-password", "new": new_password, "repeat": new_password}
        )
        assert changed.status_code == 303
        assert changed.headers["location"] == "/settings/password?changed=1"
        new_cookie = changer.client.cookies[SESSION_COOKIE]
        assert new_cookie != old_cookie
        assert changer.get("/settings/password?changed=1").status_code == 200
        assert changer.get("/models").status_code == 200
        assert is_login_redirect(other.get("/models"))
        # The new session has a token of its own: a form from before the change is refused.
        stale = changer.client.post("/settings/keys", data={"csrf_token": old_token})
        assert stale.status_code == 403
    with httpx.Client(base_url=server.url, cookies={SESSION_COOKIE: old_cookie}) as replay:
        assert is_login_redirect(replay.get("/models"))
    assert [row["id"] for row in sessions_of(platform, username)] == [
        hashlib.sha256(new_cookie.encode()).hexdigest()
    ]

    with Visitor(server.url) as visitor:
        assert post_sign_in(visitor, username, "a-password").status_code == 401
        assert post_sign_in(visitor, username, new_password).status_code == 303


def test_forms_without_their_sessions_token_change_nothing(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    username = make_user(platform, unique("forged"))
    with Visitor(server.url) as visitor:
        visitor.sign_in(username)
        made = visitor.submit("/settings/keys", "/settings/keys", {"name": "mine"})
        assert made.status_code == 303
        made = visitor.get("/settings/keys")
        key_id = int(re.findall(r'data-key-id="(\d+)"', made.text)[0])
        password_hash = account(platform, username)["password_hash"]
        new = {"current": "a-password", "new": "forged-password", "repeat": "forged-password"}
        forms: list[tuple[str, dict[str, str]]] = [
            ("/settings/keys", {"name": "forged-key", "expiry_days": "30"}),
            (f"/settings/keys/{key_id}/revoke", {}),
            ("/settings/password", new),
            ("/logout", {}),
        ]
        for action, fields in forms:
            for token in ({}, {"csrf_token": "forged"}, {"csrf_token": ""}):
                refused = visitor.client.post(action, data={**fields, **token})
                assert refused.status_code == 403, (action, token)
                assert "text/html" in refused.headers["content-type"]
        keys = visitor.get("/settings/keys")
        assert keys.status_code == 200  # still signed in: the forged sign-out did nothing
        assert key_rows(keys.text) == 1 and "forged-key" not in keys.text
        assert query(platform, "SELECT revoked_at FROM api_keys WHERE id = :id", id=key_id) == [
            {"revoked_at": None}
        ]
        assert account(platform, username)["password_hash"] == password_hash
        assert len(sessions_of(platform, username)) == 1


def test_forms_from_another_site_are_refused_even_with_the_right_token(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    username = make_user(platform, unique("cross-site"))
    with Visitor(server.url) as visitor:
        visitor.sign_in(username)
        token = csrf_token(visitor.get("/settings/keys").text)
        fields = {"csrf_token": token, "name": "from-elsewhere"}
        for headers in ({"origin": EVIL}, {"referer": EVIL + "/page"}):
            refused = visitor.client.post("/settings/keys", data=fields, headers=headers)
            assert refused.status_code == 403, headers
            out = visitor.client.post("/logout", data={"csrf_token": token}, headers=headers)
            assert out.status_code == 403, headers
        assert key_rows(visitor.get("/settings/keys").text) == 0
        # The same form from this site's own page goes through.
        same_site = visitor.client.post(
            "/settings/keys", data=fields, headers={"origin": server.url}
        )
        assert same_site.status_code == 303
        assert key_rows(visitor.get("/settings/keys").text) == 1

    with Visitor(server.url) as visitor:
        token = csrf_token(visitor.get("/login").text)
        fields = {"csrf_token": token, "username": username, "password": "a-password"}
        refused = visitor.client.post("/login", data=fields, headers={"origin": EVIL})
        assert refused.status_code == 403 and SESSION_COOKIE not in set_cookies(refused)


def test_one_users_token_does_not_open_another_users_forms(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    alice, mallory = make_user(platform, unique("alice")), make_user(platform, unique("mallory"))
    with Visitor(server.url) as victim, Visitor(server.url) as attacker:
        victim.sign_in(alice)
        attacker.sign_in(mallory)
        attackers_token = csrf_token(attacker.get("/settings/keys").text)
        for action in ("/settings/keys", "/logout"):
            refused = victim.client.post(
                action, data={"csrf_token": attackers_token, "name": "planted"}
            )
            assert refused.status_code == 403, action
        keys = victim.get("/settings/keys")
        assert keys.status_code == 200 and key_rows(keys.text) == 0

        # Nor may one user revoke another's key, even with their own valid token.
        made = victim.submit("/settings/keys", "/settings/keys", {"name": "alices"})
        assert made.status_code == 303
        made = victim.get("/settings/keys")
        key_id = int(re.findall(r'data-key-id="(\d+)"', made.text)[0])
        stolen = attacker.submit("/settings/keys", f"/settings/keys/{key_id}/revoke", {})
        assert stolen.status_code == 404
        assert query(platform, "SELECT revoked_at FROM api_keys WHERE id = :id", id=key_id) == [
            {"revoked_at": None}
        ]


def test_the_sign_in_form_needs_the_token_of_its_cookie(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    username = make_user(platform, unique("signin-csrf"))
    credentials = {"username": username, "password": "a-password"}
    with Visitor(server.url) as visitor:
        token = csrf_token(visitor.get("/login").text)
        for fields in (credentials, {**credentials, "csrf_token": "forged"}):
            refused = visitor.client.post("/login", data=fields)
            assert refused.status_code == 403
            assert SESSION_COOKIE not in set_cookies(refused)
        # A token from a page without its cookie (another browser's form) is refused too.
        with httpx.Client(base_url=server.url) as stranger:
            refused = stranger.post("/login", data={**credentials, "csrf_token": token})
            assert refused.status_code == 403 and SESSION_COOKIE not in set_cookies(refused)
        assert sessions_of(platform, username) == []
        assert (
            visitor.client.post("/login", data={**credentials, "csrf_token": token}).status_code
            == 303
        )


def test_admin_forms_without_the_token_change_nothing(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    admin = make_user(platform, unique("csrf-admin"), "--admin")
    target = unique("csrf-target")
    planted = unique("planted")
    with Visitor(server.url) as visitor:
        visitor.sign_in(admin)
        create_in_portal(visitor, target)
        target_id = account(platform, target)["id"]
        valid = csrf_token(visitor.get("/admin/users").text)
        forms: list[tuple[str, dict[str, str]]] = [
            ("/admin/users", {"username": planted, "password": "a-password", "level": "admin"}),
            (f"/admin/users/{target_id}", {"action": "disable"}),
            (f"/admin/users/{target_id}", {"action": "save", "level": "admin", "groups": "x"}),
        ]
        for action, fields in forms:
            for token in ({}, {"csrf_token": "forged"}):
                refused = visitor.client.post(action, data={**fields, **token})
                assert refused.status_code == 403, (action, token)
            cross_site = visitor.client.post(
                action, data={**fields, "csrf_token": valid}, headers={"origin": EVIL}
            )
            assert cross_site.status_code == 403, action
        state = account(platform, target)
        assert not state["disabled"] and state["level"] == "user"
        assert planted not in visitor.get("/admin/users").text
        assert planted not in visitor.get("/admin/audit").text
    users = platform.cli("user", "list").stdout
    assert planted not in users
    assert f"{target}\tuser\t-\t-\tactive" in users.splitlines()


def test_admin_pages_and_forms_refuse_an_ordinary_user(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    member = make_user(platform, unique("member"))
    other = make_user(platform, unique("other"))
    member_id, other_id = account(platform, member)["id"], account(platform, other)["id"]
    planted = unique("planted")
    with Visitor(server.url) as visitor:
        visitor.sign_in(member)
        for path in ("/admin", "/admin/users", "/admin/audit"):
            page = visitor.get(path)
            assert page.status_code == 403, path
            assert planted not in page.text and other not in page.text
        token = csrf_token(visitor.get("/settings/keys").text)
        forms: list[tuple[str, dict[str, str]]] = [
            ("/admin/users", {"username": planted, "password": "a-password", "level": "admin"}),
            (f"/admin/users/{other_id}", {"action": "disable"}),
            (f"/admin/users/{member_id}", {"action": "save", "level": "admin", "groups": "x"}),
            (f"/admin/users/{other_id}", {"action": "save", "level": "admin", "groups": "x"}),
        ]
        for action, fields in forms:
            refused = visitor.client.post(action, data={"csrf_token": token, **fields})
            assert refused.status_code == 403, (action, fields)
        assert visitor.get("/models").status_code == 200  # the session itself is fine
    assert query(platform, "SELECT id FROM users WHERE username = :name", name=planted) == []
    for username in (member, other):
        state = account(platform, username)
        assert state["level"] == "user" and not state["disabled"], username
    actions = query(platform, "SELECT action FROM audit_events WHERE actor = :name", name=member)
    assert actions == []


def audit_rows(page: str, action: str) -> list[str]:
    return re.findall(rf'<tr data-action="{re.escape(action)}">(.*?)</tr>', page, re.DOTALL)


def test_disabling_a_user_ends_their_session_and_stops_their_keys(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    admin = make_user(platform, unique("disabler"), "--admin")
    member = unique("disabled")
    with Visitor(server.url) as boss, Visitor(server.url) as victim:
        boss.sign_in(admin)
        create_in_portal(boss, member)
        member_id, admin_id = account(platform, member)["id"], account(platform, admin)["id"]
        assert post_sign_in(victim, member).status_code == 303
        victim.submit("/settings/keys", "/settings/keys", {"name": "soon-dead"})
        found = SECRET_FIELD.search(victim.get("/settings/keys").text)
        assert found
        api = server.openai(found.group(1))
        assert api.models.list().data

        disabled = boss.submit("/admin/users", f"/admin/users/{member_id}", {"action": "disable"})
        assert disabled.status_code == 303 and disabled.headers["location"] == "/admin/users"
        assert is_login_redirect(victim.get("/models"))
        assert sessions_of(platform, member) == []
        with pytest.raises(openai.AuthenticationError):
            api.models.list()
        with Visitor(server.url) as again:
            assert post_sign_in(again, member).status_code == 401
        events = boss.get("/admin/audit")
        assert events.status_code == 200
        assert any(
            f">{admin}</td>" in row and f">{member}</td>" in row
            for row in audit_rows(events.text, "user.disable")
        )

        # An admin cannot lock themselves out.
        for action in ("disable", "enable"):
            refused = boss.submit("/admin/users", f"/admin/users/{admin_id}", {"action": action})
            assert refused.status_code == 400
        demoted = boss.submit(
            "/admin/users",
            f"/admin/users/{admin_id}",
            {"action": "save", "level": "user", "groups": ""},
        )
        assert demoted.status_code == 400
        state = account(platform, admin)
        assert not state["disabled"] and state["level"] == "admin"
        assert boss.get("/admin/users").status_code == 200

        enabled = boss.submit("/admin/users", f"/admin/users/{member_id}", {"action": "enable"})
        assert enabled.status_code == 303
        assert any(
            f">{member}</td>" in row
            for row in audit_rows(boss.get("/admin/audit").text, "user.enable")
        )
    with Visitor(server.url) as returning:
        assert post_sign_in(returning, member).status_code == 303
        assert returning.get("/models").status_code == 200
    assert api.models.list().data


#: Where a `next` parameter must not send a browser; the first ones are plainly elsewhere.
OFF_SITE = ("//evil.example/x", "https://evil.example", "http:evil.example", "javascript:alert(1)")
TRICKY = ("/\\evil.example", "\\\\evil.example", "/\t/evil.example", "/\\/evil.example")


def test_redirects_after_sign_in_and_the_language_switch_stay_on_the_site(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    username = make_user(platform, unique("redirected"))
    for target in OFF_SITE + TRICKY:
        with Visitor(server.url) as visitor:
            form = visitor.get("/login", params={"next": target})
            signed_in = post_sign_in(visitor, username, next=target)
            assert signed_in.status_code == 303, target
            # Already signed in, the sign-in page sends the browser on at once.
            bounced = visitor.get("/login", params={"next": target})
            switched = visitor.get("/lang/en", params={"next": target})
        for response in (signed_in, bounced, switched):
            location = response.headers["location"]
            assert response.status_code == 303 and stays_on_site(location), (target, location)
            if target in OFF_SITE:
                assert location == "/", (target, location)
        if target in OFF_SITE:
            assert 'name="next" value="/"' in form.text

    # A page of the site survives the round trip through sign-in, and is escaped on the way.
    with Visitor(server.url) as visitor:
        sent_away = visitor.get("/usage?days=7")
        assert sent_away.headers["location"] == "/login?next=%2Fusage%3Fdays%3D7"
        hostile = visitor.get("/login", params={"next": '/models"><script>alert(1)</script>'})
        assert "<script>alert(1)" not in hostile.text
        signed_in = post_sign_in(visitor, username, next="/usage?days=7")
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/usage?days=7"
        switched = visitor.get("/lang/zh", params={"next": "/settings/keys"})
        assert switched.headers["location"] == "/settings/keys"


def test_a_keys_secret_is_shown_once_and_kept_nowhere(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    password = "pw-" + secrets.token_hex(12)
    username = make_user(platform, unique("secretive"), password=password)
    wrong = "wrong-" + secrets.token_hex(12)
    with Visitor(server.url) as visitor:
        assert post_sign_in(visitor, username, wrong).status_code == 401
        assert post_sign_in(visitor, username, password).status_code == 303
        created = visitor.submit(
            "/settings/keys", "/settings/keys", {"name": "once", "expiry_days": "30"}
        )
        assert created.status_code == 303 and created.headers["location"] == "/settings/keys"
        shown = visitor.get("/settings/keys")
        found = SECRET_FIELD.search(shown.text)
        assert found, "the page the form leads to shows the new key"
        secret = found.group(1)
        assert secret.startswith("sk-") and shown.text.count(secret) == 1
        assert server.openai(secret).models.list().data

        later = visitor.get("/settings/keys")  # a refresh, or Back to the page
        assert later.status_code == 200
        assert secret[:10] in later.text  # the key is listed, by its prefix
        assert secret not in later.text and secret[10:] not in later.text
        assert 'id="flash-secret"' not in later.text

        new_password = "new-" + secrets.token_hex(12)
        changed = visitor.submit(
            "/settings/password",
            "/settings/password",
            {"current": password, "new": new_password, "repeat": new_password},
        )
        assert changed.status_code == 303

    rows = query(platform, "SELECT * FROM api_keys")
    assert any(row["prefix"] == secret[:10] for row in rows)
    rows += query(platform, "SELECT * FROM web_sessions")
    assert not [row for row in rows if any(secret in str(value) for value in row.values())]
    logs = server.logs()
    for typed in (secret, secret[10:], password, wrong, new_password):
        assert typed not in logs
