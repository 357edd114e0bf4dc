"""Ask a provider's OpenAI-compatible ``GET /models``: does it answer, and with which models.

What the upstream said is never passed on: a page may show the status and a short, generic
reason, not an internal service's body.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import orjson

TIMEOUT = aiohttp.ClientTimeout(total=10)
#: At most this many model ids are taken from one answer.
MOST = 500


@dataclass(frozen=True, slots=True)
class Listing:
    """How the provider answered: ``ok``, ``refused`` (an HTTP error status),
    ``unreachable``, or ``not_a_list`` (it answered, but not with a model list)."""

    result: str
    status: int | None = None
    models: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.result == "ok"


async def list_models(http: aiohttp.ClientSession, base_url: str, api_key: str | None) -> Listing:
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with http.get(
            base_url.rstrip("/") + "/models", headers=headers, timeout=TIMEOUT
        ) as response:
            if response.status != 200:
                return Listing("refused", response.status)
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return Listing("unreachable")
    try:
        data = orjson.loads(body)["data"]
        ids = [str(item["id"]) for item in data if isinstance(item, dict) and "id" in item]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return Listing("not_a_list", 200)
    return Listing("ok", 200, tuple(sorted(set(ids)))[:MOST])
