"""Latency at concurrency 1: the same request, one at a time, to the bare mock and through the
gateway, alternating, so both see the same machine state and the difference is the gateway's.

For streams it also times the first content chunk (TTFT): the first ``"content":"x`` with a
non-empty value, not the role chunk the mock sends first.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass

import aiohttp
import orjson

FIRST_CONTENT = re.compile(rb'"content":\s*"[^"]')
#: Requests ``paired`` sends each target before it measures.
WARMUP = 200


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str
    api_key: str


@dataclass(slots=True)
class Samples:
    """Microseconds per request: to the complete response, and (streams) to the first token."""

    total_us: list[float]
    first_us: list[float]


async def _timed(
    session: aiohttp.ClientSession, target: Target, payload: bytes, *, stream: bool
) -> tuple[float, float | None]:
    headers = {"authorization": f"Bearer {target.api_key}", "content-type": "application/json"}
    start = time.perf_counter()
    first: float | None = None
    async with session.post(target.url, data=payload, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {response.status}: {await response.text()}")
        if not stream:
            await response.read()
        else:
            seen = b""
            async for chunk in response.content.iter_any():
                if first is None:
                    # A chunk boundary may cut the pattern: search what arrived so far.
                    seen += chunk
                    if FIRST_CONTENT.search(seen):
                        first = time.perf_counter()
            if first is None:
                raise RuntimeError(f"{target.name}: the stream had no content chunk")
    end = time.perf_counter()
    return (end - start) * 1e6, (first - start) * 1e6 if first is not None else None


async def paired(
    targets: tuple[Target, Target],
    body: dict[str, object],
    *,
    stream: bool,
    seconds: float,
    warmup: int = WARMUP,
    max_pairs: int = 20_000,
) -> dict[str, Samples]:
    """Alternate requests to both targets for ``seconds``; who goes first flips every pair."""
    payload = orjson.dumps(body)
    samples = {target.name: Samples([], []) for target in targets}
    # One keep-alive connection per target, as a single sequential client would hold.
    sessions = {
        target.name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        for target in targets
    }
    try:
        for _ in range(warmup):
            for target in targets:
                await _timed(sessions[target.name], target, payload, stream=stream)
        deadline = time.monotonic() + seconds
        for number in range(max_pairs):
            if time.monotonic() > deadline:
                break
            order = targets if number % 2 == 0 else targets[::-1]
            for target in order:
                total, first = await _timed(sessions[target.name], target, payload, stream=stream)
                samples[target.name].total_us.append(total)
                if first is not None:
                    samples[target.name].first_us.append(first)
    finally:
        for session in sessions.values():
            await session.close()
    return samples


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated; the samples need not be sorted."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 10) - 1]
