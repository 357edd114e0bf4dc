"""Soak: moderate load through nginx and two replicas for minutes, watching for leaks.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--rate 40]

It builds the compose topology on this machine (tests/topology.py: nginx, two gateway
replicas on one PostgreSQL database, Redis, SeaweedFS, the mock upstream as the demo provider),
sends a steady mix of calls at ``--rate`` a second (chat, streamed chat, embeddings, the model
list; an open loop, so a slow gateway does not slow the load) and every 10 s samples each
replica's serving process: RSS, open files, threads, and its asyncio tasks (from its /metrics),
and the database's connections (pg_stat_activity). It prints a table and a verdict (flat or
not, comparing the first minutes after warm-up with the last) and writes every sample to
``--json``. Not part of CI: a run takes the minutes it is told to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.topology import Topology, topology, wait_for_models  # noqa: E402

SAMPLE_SECONDS = 10.0
WARMUP_SECONDS = 60.0


@dataclass
class Load:
    sent: int = 0
    #: Calls to the relaying endpoints: each leaves one usage row.
    relayed: int = 0
    ok: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)


def status_of(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "Threads"):
            fields[name] = int(value.split()[0])
    return {
        "rss_mb": fields["VmRSS"] // 1024,
        "threads": fields["Threads"],
        "open_files": len(list(Path(f"/proc/{pid}/fd").iterdir())),
    }


def tasks_of(replica_url: str) -> int:
    text = httpx.get(replica_url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("hepai_event_loop_tasks "):
            return int(float(line.split()[1]))
    return -1


def database_connections(database_url: str) -> int:
    name = database_url.rsplit("/", 1)[1]
    admin = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchone()
    return int(row[0]) if row else -1


def usage_rows(database_url: str) -> int:
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SELECT count(*) FROM usage_records").fetchone()
    return int(row[0]) if row else -1


async def one_call(session: aiohttp.ClientSession, place: Topology, load: Load) -> None:
    headers = {"authorization": f"Bearer {place.key}"}
    hello = [{"role": "user", "content": "Hello"}]
    kind = random.random()
    started = time.monotonic()
    load.sent += 1
    load.relayed += kind < 0.9
    try:
        if kind < 0.4:
            body: dict[str, Any] = {"model": "demo/mock-chat", "messages": hello}
            async with session.post(place.base_url + "/chat/completions", json=body) as answer:
                await answer.read()
                status = answer.status
        elif kind < 0.7:
            body = {"model": "demo/mock-chat", "messages": hello, "stream": True}
            body["mock"] = {"chunks": 20, "delay": 0.01}
            async with session.post(place.base_url + "/chat/completions", json=body) as answer:
                async for _chunk in answer.content.iter_any():
                    pass
                status = answer.status
        elif kind < 0.9:
            body = {"model": "demo/mock-embedding", "input": "soak"}
            async with session.post(place.base_url + "/embeddings", json=body) as answer:
                await answer.read()
                status = answer.status
        else:
            async with session.get(place.base_url + "/models", headers=headers) as answer:
                await answer.read()
                status = answer.status
        if status == 200:
            load.ok += 1
            load.latencies.append(time.monotonic() - started)
        else:
            load.failed += 1
            load.errors[str(status)] = load.errors.get(str(status), 0) + 1
    except (aiohttp.ClientError, TimeoutError) as error:
        load.failed += 1
        name = type(error).__name__
        load.errors[name] = load.errors.get(name, 0) + 1


async def drive(place: Topology, rate: float, seconds: float, load: Load) -> None:
    """An open loop: a call every 1/rate seconds, each on its own task."""
    headers = {"authorization": f"Bearer {place.key}"}
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(
        headers=headers, timeout=timeout, connector=connector
    ) as session:
        pending: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        beat = 0
        while time.monotonic() - start < seconds:
            task = asyncio.create_task(one_call(session, place, load))
            pending.add(task)
            task.add_done_callback(pending.discard)
            beat += 1
            await asyncio.sleep(max(0.0, start + beat / rate - time.monotonic()))
        await asyncio.gather(*pending)


def sample(place: Topology, database_url: str, since: float) -> dict[str, Any]:
    row: dict[str, Any] = {"t": round(time.monotonic() - since)}
    for number, replica in enumerate(place.replicas, 1):
        assert replica.process is not None
        stats = status_of(replica.process.pid)
        stats["tasks"] = tasks_of(replica.url)
        row[f"replica{number}"] = stats
    row["db_connections"] = database_connections(database_url)
    return row


def flat(samples: list[dict[str, Any]], key: str, replica: str | None) -> tuple[float, float]:
    """The mean of ``key`` over the first two and the last two minutes after warm-up."""
    values = [
        (row[replica][key] if replica else row[key])
        for row in samples
        if row["t"] >= WARMUP_SECONDS
    ]
    window = max(1, int(120 / SAMPLE_SECONDS))
    return statistics.mean(values[:window]), statistics.mean(values[-window:])


def report(samples: list[dict[str, Any]], load: Load, rows: int, minutes: float) -> str:
    lines = [
        f"Soak: {minutes:g} min, {load.sent} calls ({load.sent / (minutes * 60):.1f}/s), "
        f"{load.ok} ok, {load.failed} failed {load.errors or ''}; "
        f"usage rows written: {rows} for {load.relayed} relayed calls",
    ]
    if load.latencies:
        ordered = sorted(load.latencies)
        p50 = ordered[len(ordered) // 2] * 1000
        p99 = ordered[int(len(ordered) * 0.99)] * 1000
        lines.append(f"client latency p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    lines += [
        "",
        "| t (s) | r1 RSS MB | r1 files | r1 threads | r1 tasks | r2 RSS MB | r2 files "
        "| r2 threads | r2 tasks | DB connections |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    step = max(1, len(samples) // 12)
    for row in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        one, two = row["replica1"], row["replica2"]
        lines.append(
            f"| {row['t']} | {one['rss_mb']} | {one['open_files']} | {one['threads']} | "
            f"{one['tasks']} | {two['rss_mb']} | {two['open_files']} | {two['threads']} | "
            f"{two['tasks']} | {row['db_connections']} |"
        )
    lines += ["", "First two minutes after warm-up vs the last two (mean):", ""]
    for replica in ("replica1", "replica2"):
        for key in ("rss_mb", "open_files", "threads", "tasks"):
            first, last = flat(samples, key, replica)
            lines.append(f"- {replica} {key}: {first:.1f} -> {last:.1f}")
    first, last = flat(samples, "db_connections", None)
    lines.append(f"- database connections: {first:.1f} -> {last:.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=40.0, help="calls a second")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/soak.json"))
    options = parser.parse_args()
    seconds = options.minutes * 60
    with topology(builtins=()) as place:
        wait_for_models(place, ["demo/mock-chat", "demo/mock-embedding"])
        database_url = place.env["HEPAI_SERVER_DATABASE_URL"]
        load = Load()
        samples: list[dict[str, Any]] = []
        start = time.monotonic()

        async def run() -> None:
            driver = asyncio.create_task(drive(place, options.rate, seconds, load))
            while not driver.done():
                samples.append(await asyncio.to_thread(sample, place, database_url, start))
                print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
                await asyncio.wait([driver], timeout=SAMPLE_SECONDS)
            await driver

        asyncio.run(run())
        time.sleep(2)  # the last usage batch
        rows = usage_rows(database_url)
    options.json.write_text(json.dumps({"samples": samples, "sent": load.sent}, indent=1))
    print(report(samples, load, rows, options.minutes))


if __name__ == "__main__":
    main()
