"""Flash notices: what a form's redirect leaves for the next page, shown once.

Every form answers with a redirect (post/redirect/get), so refreshing a page or going Back
never sends a form again. What the form has to say (done, or a one-time secret such as a new
API key) waits for the next page in the session's row, sealed with a key derived from the
session's cookie token, which the database never holds: a copied database shows no secret. The
first page that reads a notice clears it, and a notice not read within five minutes is void.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from cryptography.fernet import Fernet, InvalidToken

#: How long a notice waits for its page.
LIFETIME_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Flash:
    """One notice: a message of the catalog with its values, and perhaps a secret."""

    message: str
    values: Mapping[str, str] = field(default_factory=dict)
    #: False for a notice of failure (shown as an alert).
    ok: bool = True
    #: Shown once beside the message, with a copy button (a new key, a generated password).
    secret: str | None = None


def _fernet(token: str) -> Fernet:
    digest = hmac.new(token.encode("utf-8", "surrogateescape"), b"hepai-flash", hashlib.sha256)
    return Fernet(base64.urlsafe_b64encode(digest.digest()))


def seal(flash: Flash, *, token: str, now: int) -> str:
    """The notice, readable only with the session's cookie token."""
    body = {"m": flash.message, "v": dict(flash.values), "ok": flash.ok, "s": flash.secret}
    return _fernet(token).encrypt_at_time(orjson.dumps(body), now).decode()


def unseal(sealed: str, *, token: str, now: int) -> Flash | None:
    """The notice, or None when it is too old or not this session's."""
    try:
        body = orjson.loads(_fernet(token).decrypt_at_time(sealed.encode(), LIFETIME_SECONDS, now))
    except (InvalidToken, ValueError):
        return None
    return Flash(
        message=str(body["m"]),
        values={str(k): str(v) for k, v in body["v"].items()},
        ok=bool(body["ok"]),
        secret=body["s"] if isinstance(body["s"], str) else None,
    )
