"""Changes every replica must see at once, over Redis: a revoked key, a disabled user, a
changed permission or price. On one machine the generation files (state/generation.py) carry
them; across machines, a message on one Redis channel reaches every process within a second
(instead of the caches' minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio as redis

from hepai_server.state.changes import CALLERS, CATALOG, CHANNEL

log = logging.getLogger(__name__)


class Broadcast:
    """Publishes changes, and hands every change any process publishes to ``on_change``."""

    def __init__(self, url: str, on_change: Callable[[str], None]) -> None:
        self._client: redis.Redis = redis.Redis.from_url(url, socket_connect_timeout=2)
        self._on_change = on_change
        self._listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="broadcast")

    async def publish(self, change: str) -> None:
        try:
            await self._client.publish(CHANNEL, change)
        except (redis.RedisError, OSError) as exc:
            log.warning("could not tell the other replicas of a change (%s)", exc)

    async def _listen(self) -> None:
        while True:
            try:
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    # What happened while unsubscribed is unknown: treat it as changed.
                    self._on_change(CALLERS)
                    self._on_change(CATALOG)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._on_change(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("the change channel broke (%s); listening again", exc)
                await asyncio.sleep(1)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._client.aclose()
