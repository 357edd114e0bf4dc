"""A mock OpenID Connect provider: the institute's single sign-on, for tests and local trials.

It serves discovery, an authorization page (a username field, no password), the token
endpoint with PKCE, userinfo and its signing keys, and signs ID tokens with an RSA key made at
start. Its users and their claims come from a JSON file:

    {"alice": {"sub": "u-1", "email": "alice@example.org", "groups": ["physics"]}}

Run it with ``python -m hepai_server.testing.mock_oidc --port 9100 --users users.json
--client-id portal --client-secret s3cret``. ``GET /_mock/tokens`` lists the token requests.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_ID = "mock-key-1"


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    nonce: str
    challenge: str
    username: str


@dataclass
class MockProvider:
    issuer: str
    client_id: str
    client_secret: str
    users: dict[str, dict[str, Any]]
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    grants: dict[str, Grant] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/authorize", self.authorize_page)
        app.router.add_post("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        app.router.add_get("/userinfo", self.userinfo)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/_mock/tokens", self.recorded)
        return app

    async def discovery(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": self.issuer + "/authorize",
                "token_endpoint": self.issuer + "/token",
                "userinfo_endpoint": self.issuer + "/userinfo",
                "jwks_uri": self.issuer + "/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def authorize_page(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("client_id") != self.client_id or query.get("response_type") != "code":
            return web.Response(status=400, text="unknown client or response type")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return web.Response(status=400, text="PKCE with S256 is required")
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in query.items()
        )
        page = (
            "<!doctype html><title>Institute sign-in</title><h1>Institute sign-in</h1>"
            f'<form method="post" action="/authorize">{hidden}'
            '<label for="u">Institute account</label><input id="u" name="username">'
            '<button type="submit">Continue</button></form>'
        )
        return web.Response(text=page, content_type="text/html")

    async def authorize(self, request: web.Request) -> web.Response:
        form = await request.post()
        username = str(form.get("username", ""))
        redirect_uri = str(form["redirect_uri"])
        if username not in self.users:
            target = (
                f"{redirect_uri}?{urlencode({'error': 'access_denied', 'state': form['state']})}"
            )
            raise web.HTTPFound(target)
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(
            client_id=str(form["client_id"]),
            redirect_uri=redirect_uri,
            nonce=str(form.get("nonce", "")),
            challenge=str(form["code_challenge"]),
            username=username,
        )
        raise web.HTTPFound(f"{redirect_uri}?{urlencode({'code': code, 'state': form['state']})}")

    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append({k: v for k, v in form.items() if k != "client_secret"})
        grant = self.grants.pop(form.get("code", ""), None)  # a code works once
        if grant is None:
            return web.json_response({"error": "invalid_grant"}, status=400)
        if form.get("client_id") != self.client_id or not secrets.compare_digest(
            form.get("client_secret", ""), self.client_secret
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        verifier = form.get("code_verifier", "").encode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
        if challenge.decode() != grant.challenge or form.get("redirect_uri") != grant.redirect_uri:
            return web.json_response({"error": "invalid_grant"}, status=400)
        claims = self.claims(grant.username)
        now = int(time.time())
        id_token = jwt.encode(
            {
                **claims,
                "iss": self.issuer,
                "aud": self.client_id,
                "iat": now,
                "exp": now + 300,
                "nonce": grant.nonce,
            },
            self.key,
            algorithm="RS256",
            headers={"kid": KEY_ID},
        )
        access = secrets.token_urlsafe(24)
        self.tokens[access] = grant.username
        return web.json_response(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            }
        )

    def claims(self, username: str) -> dict[str, Any]:
        return {"preferred_username": username, **self.users[username]}

    async def userinfo(self, request: web.Request) -> web.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        username = self.tokens.get(token)
        if username is None:
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response(self.claims(username))

    async def jwks(self, _request: web.Request) -> web.Response:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return web.json_response(
            {"keys": [{**public, "kid": KEY_ID, "use": "sig", "alg": "RS256"}]}
        )

    async def recorded(self, _request: web.Request) -> web.Response:
        return web.json_response(self.token_requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--users", type=Path, required=True)
    parser.add_argument("--client-id", default="hepai-portal")
    parser.add_argument("--client-secret", default="portal-secret")
    arguments = parser.parse_args()
    provider = MockProvider(
        issuer=f"http://127.0.0.1:{arguments.port}",
        client_id=arguments.client_id,
        client_secret=arguments.client_secret,
        users=json.loads(arguments.users.read_text()),
    )
    web.run_app(provider.app(), host="127.0.0.1", port=arguments.port, print=None)


if __name__ == "__main__":
    main()
