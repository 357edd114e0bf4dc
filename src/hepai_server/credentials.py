"""Secrets at rest: API key generation and hashing, password hashing."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

KEY_PREFIX = "sk-"
#: 32 random bytes (256 bits), base64url: 43 characters after the prefix.
KEY_BYTES = 32
#: How much of a key is kept in the clear so a person can tell keys apart.
SHOWN_PREFIX_CHARS = 10

_hasher = PasswordHasher()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def hash_api_key(key: str) -> str:
    """SHA-256 is right for keys: they carry 256 random bits, so a slow hash adds nothing."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def shown_prefix(key: str) -> str:
    return key[:SHOWN_PREFIX_CHARS]


def looks_like_api_key(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and 20 <= len(key) <= 256


def new_password() -> str:
    return secrets.token_urlsafe(18)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
