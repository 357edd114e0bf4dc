"""Single sign-on with the institute's OpenID Connect provider: authorization code flow with
PKCE, a state and a nonce, and the ID token's signature checked against the provider's keys.

The flow's secrets (state, nonce, PKCE verifier, where to go afterwards) travel in a signed,
ten-minute, HttpOnly cookie, so no server-side store is needed between the two requests and
any node of a deployment can finish a flow another began.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import jwt
from itsdangerous import BadSignature, URLSafeTimedSerializer

from hepai_server.config import Settings

log = logging.getLogger(__name__)

#: How long a sign-in may take at the provider before its cookie is refused.
FLOW_SECONDS = 600
#: Discovery and signing keys are fetched again after this long (providers rotate keys).
CACHE_SECONDS = 3600
TIMEOUT = aiohttp.ClientTimeout(total=15)


class SignOnFailed(Exception):
    """The provider's answer could not be trusted or used; the message is for the log only."""


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the provider says signed in."""

    subject: str
    username: str
    email: str | None
    groups: tuple[str, ...]


class SingleSignOn:
    """One per process: the provider's metadata and keys, cached."""

    def __init__(self, settings: Settings, secret: bytes) -> None:
        assert settings.oidc_issuer and settings.oidc_client_id
        self.settings = settings
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        self.cookies = URLSafeTimedSerializer(secret, salt="hepai-oidc-flow")
        self._metadata: tuple[ProviderMetadata, float] | None = None
        self._keys: tuple[jwt.PyJWKSet, float] | None = None

    async def metadata(self, http: aiohttp.ClientSession) -> ProviderMetadata:
        if self._metadata is None or self._metadata[1] < time.monotonic():
            url = self.issuer + "/.well-known/openid-configuration"
            document = await fetch_json(http, "GET", url)
            if document.get("issuer", "").rstrip("/") != self.issuer:
                raise SignOnFailed(f"the provider calls itself {document.get('issuer')!r}")
            try:
                metadata = ProviderMetadata(
                    issuer=document["issuer"],
                    authorization_endpoint=document["authorization_endpoint"],
                    token_endpoint=document["token_endpoint"],
                    jwks_uri=document["jwks_uri"],
                    userinfo_endpoint=document.get("userinfo_endpoint"),
                )
            except KeyError as missing:
                raise SignOnFailed(f"the provider's discovery document lacks {missing}") from None
            self._metadata = (metadata, time.monotonic() + CACHE_SECONDS)
        return self._metadata[0]

    async def begin(
        self, http: aiohttp.ClientSession, *, redirect_uri: str, next_path: str
    ) -> tuple[str, str]:
        """The provider's sign-in URL, and the cookie that remembers this attempt."""
        metadata = await self.metadata(http)
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.settings.oidc_scopes,
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge.rstrip(b"=").decode(),
                "code_challenge_method": "S256",
            }
        )
        cookie = self.cookies.dumps(
            {"state": state, "nonce": nonce, "verifier": verifier, "next": next_path}
        )
        return f"{metadata.authorization_endpoint}?{query}", cookie

    def flow(self, cookie: str | None, state: str) -> dict[str, str]:
        """The attempt the callback belongs to; a missing, stale or other attempt fails."""
        try:
            flow: dict[str, str] = self.cookies.loads(cookie or "", max_age=FLOW_SECONDS)
        except BadSignature:
            raise SignOnFailed("no sign-in attempt of this browser is pending") from None
        if not secrets.compare_digest(flow["state"].encode(), state.encode()):
            raise SignOnFailed("the state does not match this browser's sign-in attempt")
        return flow

    async def finish(
        self, http: aiohttp.ClientSession, *, code: str, flow: dict[str, str], redirect_uri: str
    ) -> Identity:
        metadata = await self.metadata(http)
        secret = self.settings.oidc_client_secret
        tokens = await fetch_json(
            http,
            "POST",
            metadata.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "client_id": self.client_id,
                "client_secret": secret.get_secret_value() if secret else "",
                "code_verifier": flow["verifier"],
            },
        )
        if not isinstance(tokens.get("id_token"), str):
            raise SignOnFailed("the token answer has no ID token")
        claims = await self.verify(http, metadata, tokens["id_token"])
        if not secrets.compare_digest(
            str(claims.get("nonce", "")).encode(), flow["nonce"].encode()
        ):
            raise SignOnFailed("the ID token's nonce is not this attempt's")
        if metadata.userinfo_endpoint and isinstance(tokens.get("access_token"), str):
            extra = await fetch_json(
                http,
                "GET",
                metadata.userinfo_endpoint,
                headers={"authorization": f"Bearer {tokens['access_token']}"},
            )
            if extra.get("sub") == claims["sub"]:
                claims = {**extra, **claims}
        return self.identity(claims)

    async def verify(
        self, http: aiohttp.ClientSession, metadata: ProviderMetadata, token: str
    ) -> dict[str, Any]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = await self.signing_key(http, metadata, kid)
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
                audience=self.client_id,
                issuer=metadata.issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
                leeway=30,
            )
        except jwt.PyJWTError as exc:
            raise SignOnFailed(f"the ID token is not valid: {exc}") from None
        return claims

    async def signing_key(
        self, http: aiohttp.ClientSession, metadata: ProviderMetadata, kid: str | None
    ) -> Any:
        for refresh in (False, True):
            if refresh or self._keys is None or self._keys[1] < time.monotonic():
                document = await fetch_json(http, "GET", metadata.jwks_uri)
                self._keys = (jwt.PyJWKSet.from_dict(document), time.monotonic() + CACHE_SECONDS)
            for key in self._keys[0].keys:
                if kid is None or key.key_id == kid:
                    return key.key
        raise SignOnFailed(f"the provider has no signing key {kid!r}")

    def identity(self, claims: dict[str, Any]) -> Identity:
        groups = claims.get(self.settings.oidc_groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        email = claims.get("email")
        if not isinstance(email, str) or claims.get("email_verified") is False:
            # An address the provider has not verified could name someone else, and model
            # permissions may list users by e-mail.
            email = None
        username = str(claims.get(self.settings.oidc_username_claim) or "")
        if not re.search(r"[A-Za-z0-9]", username) and email:
            username = email.split("@", 1)[0]  # a name in another script: the address's
        return Identity(
            subject=str(claims["sub"]),
            username=username,
            email=email,
            groups=tuple(str(group).strip("/") for group in groups if isinstance(group, str)),
        )


async def fetch_json(
    http: aiohttp.ClientSession, method: str, url: str, **options: Any
) -> dict[str, Any]:
    try:
        async with http.request(method, url, timeout=TIMEOUT, **options) as response:
            if response.status != 200:
                detail = (await response.text())[:200]
                raise SignOnFailed(f"{method} {url} answered {response.status}: {detail}")
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise SignOnFailed(f"{method} {url} failed: {exc}") from None
    if not isinstance(body, dict):
        raise SignOnFailed(f"{method} {url} did not answer a JSON object")
    return body
