"""FileGrant: the short-lived token that lets a worker read the files its caller passed to it.

When a call through the unified gate names file ids (``interface(file_id=…)``, ``submit``
with ``{"file_id": …}``), the gate signs a grant for exactly those ids, on behalf of the
caller, and hands it to the worker in ``X-HepAI-File-Grant``. The worker reads the files with
it from ``GET /files/{id}/content``, as the caller, and may store its results for the caller
with ``POST /files`` (within the caller's quota); nothing else: not other files of the caller,
not other routes, not after the grant expires. No worker ever holds a credential that reads
everyone's files, and no user's API key leaves the platform.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from hepai_server.errors import AuthenticationFailed

PREFIX = "hfg-"
HEADER = "x-hepai-file-grant"
FILE_ID = re.compile(r"^file-[0-9a-f]{32}$")
#: Call bodies larger than this carry documents, not file ids; they are not searched.
SCAN_LIMIT = 1024 * 1024
MAX_FILES = 64


class FileGrants:
    def __init__(self, secret: bytes, *, ttl: float) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="hepai-file-grant")
        self._ttl = max(1, round(ttl))  # whole seconds, as the signer counts them

    def mint(self, user_id: int, file_ids: Iterable[str]) -> str:
        return PREFIX + self._signer.dumps({"u": user_id, "f": sorted(set(file_ids))})

    def check(self, token: str, file_id: str) -> int:
        """The user the grant acts for, if it is genuine, current, and names ``file_id``."""
        grant = self._open(token)
        if file_id not in grant["f"]:
            raise AuthenticationFailed("this file grant does not cover that file")
        return int(grant["u"])

    def holder(self, token: str) -> int:
        """The user a genuine, current grant acts for: a worker stores its results as them."""
        return int(self._open(token)["u"])

    def _open(self, token: str) -> dict[str, Any]:
        try:
            grant: dict[str, Any] = self._signer.loads(
                token.removeprefix(PREFIX), max_age=self._ttl
            )
        except SignatureExpired:
            raise AuthenticationFailed("this file grant has expired") from None
        except BadSignature:
            raise AuthenticationFailed("this file grant is not valid") from None
        return grant


def is_grant(token: str | None) -> bool:
    return token is not None and token.startswith(PREFIX)


def file_ids_in(call: object) -> list[str]:
    """The file ids a gate call (its parsed body) passes, anywhere in its args and kwargs."""
    if not isinstance(call, dict):
        return []
    found = sorted(set(_strings([call.get("args"), call.get("kwargs")])))
    return [value for value in found if FILE_ID.match(value)][:MAX_FILES]


def _strings(value: Any) -> Iterator[str]:
    # A loop, not recursion: a body nested a thousand levels deep is valid JSON.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
