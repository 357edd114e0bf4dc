"""Gateway CPU per request of the translated APIs, beside plain chat: Anthropic Messages and the
Responses API, both served by a chat-only model (translated both ways), whole and streamed.

    .venv/bin/python benchmarks/translation.py [--duration 10] [--chunks 20]

It starts the mock upstream and the gateway (one worker, pinned to core 0; the mock and wrk on
core 1) as benchmarks/run.py does, drives each request kind with wrk, and reads the gateway's
CPU time from /proc over each measurement: the difference to chat is what a translation costs.
Responses are measured with ``store: false`` (the translation alone) and with the default
``store: true`` (a stored response a request, for previous_response_id). Prints a markdown
table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from measure import Load, measure
from services import MODEL, free_port, prepare_workspace, start_gateway, start_mock
from wrkload import write_script

GATEWAY_CPU, LOAD_CPU = "0", "1"
SYSTEM, QUESTION = "You are a helpful assistant.", "Say hello in one short sentence, please."


def bodies(chunks: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each API's way of asking the same question: its path and body."""
    mock = {"chunks": chunks}
    return {
        "chat": (
            "/apiv2/chat/completions",
            {
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": QUESTION},
                ],
                "max_tokens": 64,
                "mock": mock,
            },
        ),
        "anthropic": (
            "/apiv2/v1/messages",
            {
                "model": MODEL,
                "system": SYSTEM,
                "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": 64,
                "mock": mock,
            },
        ),
        "responses": (
            "/apiv2/responses",
            {
                "model": MODEL,
                "instructions": SYSTEM,
                "input": QUESTION,
                "max_output_tokens": 64,
                "store": False,
                "mock": mock,
            },
        ),
        "responses, stored": (
            "/apiv2/responses",
            {
                "model": MODEL,
                "instructions": SYSTEM,
                "input": QUESTION,
                "max_output_tokens": 64,
                "mock": mock,
            },
        ),
    }


def cpu(result: Any) -> float:
    return float(result.gateway_cpu_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--quiet-wait", type=float, default=10.0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="Measure every kind this many times, in turn, and keep each one's least CPU per "
        "request (on a shared machine, others' work only ever adds to it).",
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hepai-translation-") as scratch:
        root = Path(scratch)
        ws = prepare_workspace(root, database_url=None)
        mock = start_mock(ws, cpus=LOAD_CPU)
        port = free_port()
        gateway = start_gateway(ws, port=port, workers=1, cpus=GATEWAY_CPU, patches=[])
        try:
            for kind, (path, body), _round in (
                (kind, request, number)
                for number in range(args.rounds)
                for kind, request in bodies(args.chunks).items()
            ):
                for stream in (False, True):
                    sent = {**body, "stream": True} if stream else body
                    label = f"{kind}{' (stream)' if stream else ''}"
                    script = write_script(root / f"{len(rows)}.lua", body=sent, api_key=ws.api_key)
                    load = Load(
                        f"http://127.0.0.1:{port}{path}",
                        script,
                        args.connections,
                        args.duration,
                        LOAD_CPU,
                    )
                    print(f"- {label}", flush=True)
                    result = measure(
                        label,
                        load,
                        gateway=gateway,
                        mock=mock,
                        through_gateway=True,
                        warmup=args.warmup,
                        quiet_wait=args.quiet_wait,
                    )
                    if result.errors:
                        raise SystemExit(f"{label}: {result.errors} failed requests")
                    print(f"  {result.rate:,.0f}/s, {result.gateway_cpu_ms:.3f} ms CPU/req")
                    rows.append((kind, stream, result))
        finally:
            gateway.stop()
            mock.stop()
    print()
    print("| request | whole: ms CPU/req | stream: ms CPU/req | whole: req/s | stream: req/s |")
    print("|---|---|---|---|---|")
    for kind in bodies(args.chunks):
        whole = min((r for k, s, r in rows if k == kind and not s), key=cpu)
        streamed = min((r for k, s, r in rows if k == kind and s), key=cpu)
        print(
            f"| {kind} | {whole.gateway_cpu_ms:.3f} | {streamed.gateway_cpu_ms:.3f} | "
            f"{whole.rate:,.0f} | {streamed.rate:,.0f} |"
        )


if __name__ == "__main__":
    main()
