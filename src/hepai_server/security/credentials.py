"""Secrets at rest: API key generation and hashing, password hashing, the signing secret."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken

from hepai_server.config import Settings

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


def signing_secret(settings: Settings) -> bytes:
    """The platform's signing secret: the configured one, else the one kept in data_dir."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    return load_or_create_secret(settings.data_dir / "secret.key")


def load_or_create_secret(path: Path) -> bytes:
    """The random signing secret kept at ``path``, made (readable by its owner only) on first
    use. Several processes may race to make it; exactly one file wins and all read it."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate = path.with_name(f"{path.name}.{secrets.token_hex(4)}")
    candidate.write_text(secrets.token_hex(32))
    candidate.chmod(0o600)
    try:
        os.link(candidate, path)  # fails if another process made it first
    except FileExistsError:
        pass
    finally:
        candidate.unlink()
    return bytes.fromhex(path.read_text().strip())


class Sealer:
    """Encrypts secrets the platform must use again (providers' API keys), with a key derived
    from the platform's signing secret: a copied database alone does not reveal them."""

    def __init__(self, secret: bytes) -> None:
        derived = hashlib.sha256(b"hepai-server sealed secrets\0" + secret).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def unseal(self, sealed: str) -> str | None:
        """The secret, or None when it was sealed under another platform secret."""
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except InvalidToken:
            return None
