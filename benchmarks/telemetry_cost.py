"""What the operations work costs a request, measured in process (CPU time, best of 5).

    .venv/bin/python benchmarks/telemetry_cost.py

- the edge middleware (request id, log context, trailing slash) on a relaying path and on
  another path, for an answer of 2 messages and for a 25-message stream, against the bare app;
- the meter: appending a request's usage row, and counting it into the Prometheus series at
  the next beat, in prometheus_client's multiprocess mode (what `serve` runs) and without it.

The wrk runs of benchmarks/run.py cannot resolve a few microseconds on a shared machine (one
run differs from the next by 20 % there); these can.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RELAY = "/apiv2/chat/completions"
BODY = {"type": "http.response.body", "body": b"x" * 100, "more_body": True}
HEADERS = [
    (b"host", b"127.0.0.1:4260"),
    (b"content-type", b"application/json"),
    (b"authorization", b"Bearer sk-0123456789abcdef"),
    (b"content-length", b"250"),
    (b"user-agent", b"wrk"),
]


async def answer(scope: dict[str, Any], _receive: Any, send: Any) -> None:
    start = [(b"content-type", b"text/event-stream"), (b"x-request-id", b"req-0")]
    await send({"type": "http.response.start", "status": 200, "headers": start})
    for _ in range(scope["chunks"]):
        await send(BODY)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def sink(_message: Any) -> None:
    pass


async def receive() -> dict[str, Any]:
    return {"type": "http.request"}


async def per_request(app: Any, path: str, chunks: int, repeats: int = 20_000) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(repeats):
            scope = {"type": "http", "path": path, "headers": HEADERS, "chunks": chunks}
            await app(scope, receive, sink)
        best = min(best, (time.process_time() - started) / repeats * 1e6)
    return best


async def edge() -> None:
    from hepai_server.gateway.edge import Edge

    wrapped = Edge(answer, frozenset({RELAY}))
    for chunks in (0, 23):
        bare = await per_request(answer, RELAY, chunks)
        relay = await per_request(wrapped, RELAY, chunks)
        other = await per_request(wrapped, "/apiv2/files", chunks)
        print(
            f"edge, {chunks + 2} messages: bare {bare:.2f} µs; relaying path +{relay - bare:.2f}"
            f" µs; other paths +{other - bare:.2f} µs"
        )


def meter(multiprocess: bool) -> None:
    from hepai_server.gateway.ledger import UsageRow
    from hepai_server.gateway.meter import Meter
    from hepai_server.telemetry.metrics import Metrics

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    metrics = Metrics(Path(directory) if directory else None)
    counting = Meter.__new__(Meter)  # the counting half alone
    counting.metrics, counting._rows, counting._children = metrics, [], {}
    for stream in (False, True):
        rows = [
            UsageRow(
                f"req-{n}",
                1,
                1,
                "chat.completions",
                "bench/chat",
                "mock/bench-chat",
                stream,
                200,
                None,
                12,
                20,
                32,
                0,
                None,
                None,
                None,
                False,
                1.5,
                0.9 if stream else None,
                0,
                None,
                None,
                None,
                time.time(),
            )
            for n in range(500)
        ]
        best = float("inf")
        for _ in range(20):
            started = time.process_time()
            for row in rows:
                counting.add(row)
            counting.count_rows()
            best = min(best, (time.process_time() - started) / len(rows) * 1e6)
        mode = "multiprocess" if multiprocess else "one process"
        kind = "stream" if stream else "non-stream"
        print(f"meter, {mode}, {kind}: {best:.2f} µs a request (append + its share of a beat)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--meter":
        meter(multiprocess=bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")))
        return
    asyncio.run(edge())
    # prometheus_client picks its mode at import: each mode in a process of its own.
    for multiprocess in (False, True):
        env = dict(os.environ)
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="hepai-metrics-")
        subprocess.run([sys.executable, __file__, "--meter"], env=env, check=True)


if __name__ == "__main__":
    main()
