"""Browser-less portal visitors for tests: an httpx client that signs in and posts forms with
the page's CSRF token, as a browser would; `Visitor` for a served platform, `AppVisitor` for
the in-process app."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.inprocess import App

CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')
#: The password tests give the accounts they sign in with.
PASSWORD = "a-password"


def csrf_token(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


class Visitor:
    """One browser: its own cookies; redirects are not followed, so tests see them."""

    def __init__(self, base_url: str, *, language: str = "en") -> None:
        self.client = httpx.Client(
            base_url=base_url, follow_redirects=False, headers={"accept-language": language}
        )

    def __enter__(self) -> Visitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def get(self, path: str, **options: object) -> httpx.Response:
        return self.client.get(path, **options)  # type: ignore[arg-type]

    def sign_in(self, username: str, password: str = PASSWORD) -> httpx.Response:
        token = csrf_token(self.get("/login").text)
        return self.client.post(
            "/login", data={"csrf_token": token, "username": username, "password": password}
        )

    def submit(self, page: str, action: str, fields: dict[str, object]) -> httpx.Response:
        """POST ``fields`` to ``action`` with the CSRF token of the form on ``page``."""
        token = csrf_token(self.get(page).text)
        return self.client.post(action, data={"csrf_token": token, **fields})  # type: ignore[arg-type]


class AppVisitor:
    """The same visitor on the in-process app (tests/inprocess.py): one browser's cookies, no
    redirects followed, forms sent with their page's CSRF token."""

    def __init__(self, app: App, *, language: str = "en") -> None:
        self.client = app.client(follow_redirects=False, headers={"accept-language": language})

    async def __aenter__(self) -> AppVisitor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def get(self, path: str, **options: Any) -> httpx.Response:
        return await self.client.get(path, **options)

    async def sign_in(self, username: str, password: str = PASSWORD) -> httpx.Response:
        token = csrf_token((await self.get("/login")).text)
        return await self.client.post(
            "/login", data={"csrf_token": token, "username": username, "password": password}
        )

    async def submit(self, page: str, action: str, fields: dict[str, Any]) -> httpx.Response:
        """POST ``fields`` to ``action`` with the CSRF token of the form on ``page``."""
        token = csrf_token((await self.get(page)).text)
        return await self.client.post(action, data={"csrf_token": token, **fields})
