"""What the platform remembers about tools between MCP requests, for a while: the functions each
worker serves (its ``get_register_functions``) and each external MCP server's tools, so a
listing does not ask every worker and server every time."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

#: Entries past which expired ones are dropped on the next put.
PRUNE_AT = 4096


class ToolCache:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable) -> Any | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def put(self, key: Hashable, value: Any) -> None:
        now = self._clock()
        if len(self._entries) >= PRUNE_AT:
            self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
        self._entries[key] = (now + self._ttl, value)
