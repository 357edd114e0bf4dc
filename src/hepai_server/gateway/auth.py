"""Who is calling: the API key from the request headers, resolved to a Caller through a cache.

Each process caches resolved keys. A key revoked, or a user disabled, on this machine bumps the
shared generation counter (``invalidation.Generation``), which empties every process's cache
before its next request; ``auth_cache_seconds`` bounds staleness for changes made elsewhere.

While the database does not answer, a key seen before keeps working on what was last looked up
(for STALE_SECONDS at a time, so the lookup is tried again now and then but not per request):
models keep answering through a database outage. A key never seen gets 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from hepai_server.errors import AuthenticationFailed, DatabaseUnavailable
from hepai_server.security.credentials import hash_api_key, looks_like_api_key
from hepai_server.services.accounts import Caller
from hepai_server.state.generation import Generation

MISSING_KEY = (
    "Missing API key. Send it as 'Authorization: Bearer sk-...' or in the 'x-api-key' header."
)
INVALID_KEY = "Invalid API key: it is unknown or has been revoked."
#: Unknown keys are remembered this long, so a flood of bad keys does not reach the database.
NEGATIVE_SECONDS = 5.0
#: How long a stale entry serves again after a lookup found the database unavailable.
STALE_SECONDS = 5.0
MAX_CACHED = 100_000

Lookup = Callable[[str], Caller | None]


def token_from_headers(headers: Mapping[bytes, bytes]) -> str | None:
    """The key from ``Authorization: Bearer …``, else from ``x-api-key`` (Anthropic's SDK)."""
    authorization, x_api_key = headers.get(b"authorization"), headers.get(b"x-api-key")
    if authorization:
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip().decode("latin-1")
    if x_api_key:
        return x_api_key.strip().decode("latin-1")
    return None


class Authenticator:
    """Resolves tokens to callers: from the cache when fresh, else from the database (a thread)."""

    def __init__(self, lookup: Lookup, generation: Generation, *, ttl: float) -> None:
        self._lookup = lookup
        self._generation = generation
        self._seen_generation = generation.read()
        self._ttl = ttl
        self._cache: dict[str, tuple[Caller | None, float]] = {}
        self._inflight: dict[str, asyncio.Future[Caller | None]] = {}
        #: Requests let in on an expired entry while the database was unavailable.
        self.stale_answers = 0

    async def authenticate(self, token: str | None) -> Caller:
        if not token:
            raise AuthenticationFailed(MISSING_KEY)
        if not looks_like_api_key(token):
            raise AuthenticationFailed(INVALID_KEY)
        now = time.monotonic()
        generation = self._generation.read()
        if generation != self._seen_generation:
            self._cache.clear()
            self._seen_generation = generation
        cached = self._cache.get(token)
        if cached is not None and cached[1] > now:
            caller = cached[0]
        else:
            try:
                caller = await self._resolve(token, now)
            except DatabaseUnavailable:
                if cached is None:
                    raise
                # The last answer, kept a little longer: better than refusing a known key.
                self._cache[token] = (cached[0], now + STALE_SECONDS)
                self.stale_answers += 1
                caller = cached[0]
        if caller is None:
            raise AuthenticationFailed(INVALID_KEY)
        if caller.expires_at is not None and caller.expires_at <= time.time():
            raise AuthenticationFailed("This API key has expired; create a new one.")
        return caller

    def forget(self) -> None:
        """Drop every cached caller (a change made on another machine)."""
        self._cache.clear()

    async def _resolve(self, token: str, now: float) -> Caller | None:
        pending = self._inflight.get(token)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Caller | None] = asyncio.get_running_loop().create_future()
        self._inflight[token] = future
        generation = self._seen_generation
        try:
            caller = await asyncio.to_thread(self._lookup, hash_api_key(token))
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so waiters alone decide whether it is raised
            raise
        else:
            future.set_result(caller)
        finally:
            del self._inflight[token]
        if self._generation.read() != generation:
            return caller  # changed while we looked: use the answer once, cache nothing
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[token] = (caller, now + (self._ttl if caller else NEGATIVE_SECONDS))
        return caller
