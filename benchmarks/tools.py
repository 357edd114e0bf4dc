"""Benchmark the built-in workers: each engine alone, and the same work through the gateway,
side by side in one run; and the gateway's latency for other requests while the tools are busy.

    .venv/bin/python benchmarks/tools.py [--duration 10]

Starts a throwaway workspace, the mock upstream, the gateway and the embeddings, markitdown and
mineru workers (all free to use both cores), measures, stops everything and prints markdown.
Documents are made by tests/documents.py, as in the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from seqlatency import percentile
from services import (
    BIN,
    MODEL,
    Service,
    Workspace,
    free_port,
    prepare_workspace,
    start_gateway,
    start_mock,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import documents  # noqa: E402

CPUS = "0,1"
SENTENCES = [
    f"Run {i} of the detector recorded {i * 37 % 1000} events at nominal field" for i in range(32)
]


def start_worker(ws: Workspace, gateway_port: int, name: str) -> Service:
    """A built-in worker as `serve --builtin` starts it: below the gateway's CPU priority."""
    from hepai_server.config import Settings

    port = free_port()
    argv = [
        "nice",
        "-n",
        str(Settings().builtin_niceness),
        str(BIN / "hepai-server"),
        "worker",
        "run",
        f"builtin:{name}",
        "--controller",
        f"http://127.0.0.1:{gateway_port}",
        "--port",
        str(port),
    ]
    env = ws.env | {"HEPAI_API_KEY": ws.api_key}
    service = Service(f"worker-{name}", argv, ws=ws, cpus=CPUS, env=env)
    service.wait_ready(f"http://127.0.0.1:{port}/apiv2/worker/get_status", timeout=180)
    return service


async def rate(
    work: Callable[[aiohttp.ClientSession], Awaitable[int]], *, clients: int, seconds: float
) -> float:
    """Units of work per second, ``clients`` calling ``work`` back to back for ``seconds``."""
    done = 0
    deadline = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            # Not `done += await ...`: that reads `done` before awaiting, and the clients'
            # increments would overwrite one another.
            units = await work(session)
            done += units

    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return done / (time.monotonic() - started)


def engines(seconds: float) -> dict[str, float]:
    """Each engine called directly in this process: what the workers add nothing to."""
    from hepai_server.worker.builtin import layout
    from hepai_server.worker.builtin.documents import check_document
    from hepai_server.worker.builtin.encoder import TextEncoder, packaged_minilm
    from hepai_server.worker.builtin.markitdown import convert_document

    results: dict[str, float] = {}
    encoder = TextEncoder(packaged_minilm(), batch_size=32)
    encoder._encode(SENTENCES)  # warm
    count, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        count += len(encoder._encode(SENTENCES)[0])
    results["embeddings"] = count / (time.monotonic() - started)

    docx = check_document(
        documents.docx(), name="r.docx", suffix=None, max_bytes=1 << 30, max_pages=10**4
    )
    convert_document(docx)
    count, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        convert_document(docx)
        count += 1
    results["markitdown"] = count / (time.monotonic() - started)

    pdf = ten_page_pdf()
    emitted: list[tuple[Any, ...]] = []
    pages, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        layout.convert_document(emitted.append, pdf)
        pages += sum(1 for item in emitted if item[0] == "page")
        emitted.clear()
    results["mineru"] = pages / (time.monotonic() - started)
    return results


def ten_page_pdf() -> bytes:

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for maker in (documents.two_column_pdf, documents.table_formula_pdf) * 5:
        writer.append(PdfReader(io.BytesIO(maker())))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


async def through_gateway(base: str, key: str, seconds: float) -> dict[str, float]:
    headers = {"authorization": f"Bearer {key}"}

    async def embed(session: aiohttp.ClientSession) -> int:
        body = {"model": "hepai/all-minilm-l6-v2", "input": SENTENCES, "encoding_format": "base64"}
        async with session.post(f"{base}/embeddings", json=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            return len((await response.json())["data"])

    docx = base64.b64encode(documents.docx()).decode()

    async def markitdown(session: aiohttp.ClientSession) -> int:
        return await gate(session, "hepai/markitdown", {"file_base64": docx, "file_name": "r.docx"})

    pdf = base64.b64encode(ten_page_pdf()).decode()

    async def mineru(session: aiohttp.ClientSession) -> int:
        await gate(session, "hepai/mineru", {"file_base64": pdf, "file_name": "p.pdf"})
        return 10

    async def gate(session: aiohttp.ClientSession, model: str, kwargs: dict[str, Any]) -> int:
        url = f"{base}/worker/unified_gate/?model={model}&function=interface"
        async with session.post(url, json={"kwargs": kwargs}, headers=headers) as response:
            assert response.status == 200, await response.text()
            await response.read()
            return 1

    return {
        "embeddings": await rate(embed, clients=4, seconds=seconds),
        "markitdown": await rate(markitdown, clients=2, seconds=seconds),
        "mineru": await rate(mineru, clients=2, seconds=seconds),
    }


async def chat_latency(base: str, key: str, seconds: float, label: str) -> list[float]:
    """Client-side latencies (ms) of a small chat call through the gateway, one at a time;
    each request id is ``{label}-{n}``, so the gateway's own record of it can be found."""
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    samples: list[float] = []
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < stop:
            started = time.perf_counter()
            ids = {**headers, "x-request-id": f"{label}-{len(samples)}"}
            async with session.post(f"{base}/chat/completions", json=body, headers=ids) as r:
                await r.read()
            samples.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.01)
    return samples


def keep_converting(base: str, key: str, seconds: float) -> None:
    """A client each keeping markitdown and mineru converting, in a process of its own, so
    that its event loop is not the probe's; at the default priority, as users' clients run,
    whatever priority the harness was given."""
    os.setpriority(os.PRIO_PROCESS, 0, 0)
    headers = {"authorization": f"Bearer {key}"}
    stop = time.monotonic() + seconds
    docx = base64.b64encode(documents.docx()).decode()
    pdf = base64.b64encode(documents.two_column_pdf()).decode()

    async def load(session: aiohttp.ClientSession, model: str, kwargs: dict[str, Any]) -> None:
        url = f"{base}/worker/unified_gate/?model={model}&function=interface"
        while time.monotonic() < stop:
            async with session.post(url, json={"kwargs": kwargs}, headers=headers) as response:
                await response.read()

    async def both() -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(
                load(session, "hepai/markitdown", {"file_base64": docx, "file_name": "r.docx"}),
                load(session, "hepai/mineru", {"file_base64": pdf, "file_name": "p.pdf"}),
            )

    asyncio.run(both())


def busy_latency(base: str, key: str, seconds: float) -> list[float]:
    loader = multiprocessing.get_context("spawn").Process(
        target=keep_converting, args=(base, key, seconds + 2)
    )
    loader.start()
    try:
        time.sleep(2)  # the conversions under way before the first probe
        return asyncio.run(chat_latency(base, key, seconds, "busy"))
    finally:
        loader.join()


def recorded_latency(ws: Workspace, label: str) -> list[float]:
    """The gateway's own record of each probe (usage_records.latency_ms), once written."""
    import sqlalchemy as sa

    engine = sa.create_engine(ws.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT latency_ms FROM usage_records WHERE request_id LIKE :p"),
                {"p": f"{label}-%"},
            )
            return [float(row[0]) for row in rows]
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--patch",
        action="append",
        default=[],
        help="a module of benchmarks/experiments/ to load into the gateway (repeatable)",
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    print("engines alone ...", flush=True)
    alone = engines(args.duration)
    with tempfile.TemporaryDirectory(prefix="hepai-tools-bench-") as tmp:
        ws = prepare_workspace(Path(tmp), database_url=None)
        services: list[Service] = []
        try:
            services.append(start_mock(ws, cpus=CPUS))
            port = free_port()
            services.append(start_gateway(ws, port=port, workers=1, cpus=CPUS, patches=args.patch))
            for name in ("embeddings", "markitdown", "mineru"):
                services.append(start_worker(ws, port, name))
            base = f"http://127.0.0.1:{port}/apiv2"
            print("through the gateway ...", flush=True)
            routed = asyncio.run(through_gateway(base, ws.api_key, args.duration))
            idle = asyncio.run(chat_latency(base, ws.api_key, args.duration, "idle"))
            busy = busy_latency(base, ws.api_key, args.duration)
        finally:
            for service in reversed(services):
                service.stop()  # the gateway writes its last usage rows on the way out
        recorded = {label: recorded_latency(ws, label) for label in ("idle", "busy")}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    print(f"\ncommit {commit}, {args.duration:g} s per measurement\n")
    print("| Work | Engine alone | Through the gateway |")
    print("|---|---|---|")
    units = {"embeddings": "texts/s (batch 32)", "markitdown": "DOCX/s", "mineru": "pages/s"}
    for name, unit in units.items():
        print(f"| {name} | {alone[name]:.1f} {unit} | {routed[name]:.1f} {unit} |")
    print(
        "\n| Chat through the gateway (mock upstream) | Requests | Client p50 / p99 ms "
        "| Gateway's own p50 / p99 ms |"
    )
    print("|---|---|---|---|")
    for label, samples, title in (
        ("idle", idle, "tools idle"),
        ("busy", busy, "markitdown and mineru converting"),
    ):
        own = recorded[label]
        print(
            f"| {title} | {len(samples)} | {percentile(samples, 50):.2f} / "
            f"{percentile(samples, 99):.2f} | {percentile(own, 50):.2f} / "
            f"{percentile(own, 99):.2f} |"
        )


if __name__ == "__main__":
    main()
