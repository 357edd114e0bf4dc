"""What governance costs the gateway: limits off, limits on in process, limits on in Redis.

    .venv/bin/python benchmarks/limits.py [--duration 10] [--nice 19]

One workspace, one mock upstream; the gateway pinned to core 0 as in run.py, started three
times: with no prices, budgets or limits (off); then, with a price for the model, a budget for
the user and RPM, TPM and concurrency limits for the user and the model (all large enough
never to refuse: every check runs, none says no), counted in process (memory) and in Redis
(redis, a redis-server of its own on core 1). For each: gateway CPU per non-stream request at
saturation (wrk) and the added latency at concurrency 1, the measures of issue 13's budget
(at most +25 % CPU over off and at most 0.5 ms; at most +0.1 ms p50).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flame import start_recording, summarize, wait_recording
from run import GATEWAY_CPU, LOAD_CPU, Bench, latency, priority, running, throughput, url
from services import (
    BIN,
    MODEL,
    Service,
    cli,
    free_port,
    prepare_workspace,
    ready_or_stop,
    start_mock,
    wait_for_workers,
)
from wrkload import run_wrk

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--latency-seconds", type=float, default=5)
    parser.add_argument("--quiet-wait", type=float, default=10)
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--json", type=Path, default=HERE / "limits.json")
    parser.add_argument(
        "--keep", action="store_true", help="keep the workspace (its logs) for a look afterwards"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="also record each configuration's chat load with py-spy into this directory",
    )
    args = parser.parse_args()
    args.patch = []
    return args


def gateway(b: Bench, port: int, extra: dict[str, str]) -> Service:
    argv = [str(BIN / "hepai-server"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    env = {**b.ws.env, **extra}
    service = Service(f"gateway-{port}", argv, ws=b.ws, cpus=GATEWAY_CPU, env=env)

    def ready() -> None:
        service.wait_ready(f"http://127.0.0.1:{port}/healthz")
        wait_for_workers(service, 1)

    ready_or_stop(service, ready)
    return service


def limits_on(b: Bench) -> None:
    """A price, a budget and every kind of rate limit, none of which ever refuses here."""
    env, root, user = b.ws.env, b.ws.root, b.ws.username
    cli(["price", "set", MODEL, "--input", "2", "--output", "8"], env, root)
    cli(["budget", "set", "--user", user, "--amount", "1000000", "--period", "month"], env, root)
    for scope in (["--user", user], ["--model", MODEL]):
        cli(
            ["limit", "set", *scope, "--rpm", "10000000", "--tpm", "10000000000",
             "--concurrency", "100000"],
            env,
            root,
        )  # fmt: skip


def measure_config(
    b: Bench, mock: Service, key: str, name: str, extra: dict[str, str]
) -> dict[str, Any]:
    port = free_port()
    print(f"== {name}", flush=True)
    with running(gateway(b, port, extra)) as gw:
        lat = latency(b, "chat", mock=mock, gateway=gw, port=port)
        rate = throughput(b, "chat", "gateway", port=port, cpus=LOAD_CPU, gateway=gw, mock=mock)
        if b.args.profile is not None:
            rate["profile"] = record(b, gw, port, b.args.profile / f"limits-{key}.txt")
    return {"latency": lat, "throughput": rate}


def record(b: Bench, gw: Service, port: int, raw: Path) -> dict[str, Any]:
    """py-spy on the gateway under the chat load, a run of its own (sampling perturbs it)."""
    raw.parent.mkdir(parents=True, exist_ok=True)
    script, seconds = b.script("chat", "gateway"), b.args.duration
    target = url("gateway", port)
    recorder = start_recording(gw.pid, seconds=seconds - 1, out=raw, cpus=LOAD_CPU)
    run_wrk(target, script, connections=b.args.connections, seconds=seconds, cpus=LOAD_CPU)
    wait_recording(recorder, timeout=seconds + 30)
    print(f"  {raw}", flush=True)
    return asdict(summarize(raw))


def main() -> None:
    args = parse_args()
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="hepai-limits-"))
    redis_dir = root / "redis"
    redis_dir.mkdir()
    results: dict[str, Any] = {}
    try:
        with priority(args.nice):
            b = Bench(args=args, ws=prepare_workspace(root, database_url=None))
            redis_port = free_port()
            redis = subprocess.Popen(
                ["taskset", "-c", LOAD_CPU, shutil.which("redis-server") or "redis-server",
                 "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(redis_dir)],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                with running(start_mock(b.ws, cpus=LOAD_CPU)) as mock:
                    results["off"] = measure_config(b, mock, "off", "limits off", {})
                    limits_on(b)
                    results["memory"] = measure_config(
                        b, mock, "memory", "limits on, in process", {}
                    )
                    redis_url = {"HEPAI_SERVER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
                    results["redis"] = measure_config(
                        b, mock, "redis", "limits on, Redis", redis_url
                    )
            finally:
                redis.terminate()
                redis.wait(10)
    finally:
        if args.keep:
            print(f"workspace kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    print(table(results))


def table(results: dict[str, Any]) -> str:
    off = results["off"]["throughput"]["gateway_cpu_ms"]
    lines = [
        "| Limits | Gateway CPU ms/req | vs off | req/s | Added p50 ms (c=1) | Others in the way |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (("off", "off"), ("memory", "on, in process"), ("redis", "on, Redis")):
        run = results[name]
        cpu = run["throughput"]["gateway_cpu_ms"]
        lines.append(
            f"| {label} | {cpu:.3f} | {100 * (cpu / off - 1):+.1f} % | "
            f"{run['throughput']['rate']:,.0f} | {run['latency']['total']['added_p50_ms']:+.3f} | "
            f"{run['throughput']['interfering_cores']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
