"""The changes every process must hear of at once, by name, and what publishes them.

Kept apart from their Redis transport (state/broadcast.py), so that a process without Redis
never imports redis-py (which imports OpenTelemetry's SDK whenever it is installed).
"""

from __future__ import annotations

from typing import Protocol

#: The Redis channel changes go out on.
CHANNEL = "hepai:changes"
#: What changed: the callers (keys, users, groups) or the catalog (providers, permissions,
#: prices, budgets, limits).
CALLERS, CATALOG = "callers", "catalog"


class Publisher(Protocol):
    async def publish(self, change: str) -> None: ...

    async def close(self) -> None: ...
