"""What governance costs the gateway: limits off, limits on in process, limits on in Redis.

    .venv/bin/python benchmarks/limits.py [--rounds 6] [--duration 4] [--nice 19]

Three gateways pinned to core 0 as in run.py, all running at once: one with no prices,
budgets or limits (off, a workspace of its own); two on a workspace with a price for the
model, a budget for the user and RPM, TPM and concurrency limits for the user and the model
(all large enough never to refuse: every check runs, none says no), one counting in process
(memory), one in Redis (redis, a redis-server of its own on core 1). Each round measures
every gateway in turn, in an order that rotates: gateway CPU per non-stream request at
saturation (wrk) and the added latency at concurrency 1 (against its own mock, request by
request). Interleaved rounds, on a machine shared with other work, put the same drift on
all three; each configuration is compared with off in the same round, and the medians of
those differences are the measures of issue 13's budget (at most +25 % CPU over off and at
most 0.5 ms; at most +0.1 ms p50).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from redis import Redis

from flame import start_recording, summarize, wait_recording
from run import GATEWAY_CPU, LOAD_CPU, Bench, latency, priority, running, throughput, url
from seqlatency import WARMUP
from services import (
    BIN,
    MODEL,
    Service,
    cli,
    free_port,
    prepare_workspace,
    ready_or_stop,
    script_stats,
    start_mock,
    wait_for_workers,
)
from wrkload import run_wrk

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=4)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--latency-seconds", type=float, default=3)
    parser.add_argument("--quiet-wait", type=float, default=2)
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


@dataclass
class Config:
    """One gateway under measurement, and what it is measured with."""

    name: str
    bench: Bench
    mock: Service
    gateway: Service
    port: int
    #: The Redis its counters are in, if they are.
    redis: Redis | None = None

    def measure(self) -> dict[str, Any]:
        print(f"== {self.name}", flush=True)
        b, mock, gw, port = self.bench, self.mock, self.gateway, self.port
        calls = self.script_calls()
        lat = latency(b, "chat", mock=mock, gateway=gw, port=port)
        requests = lat["total"]["pairs"] + WARMUP
        lat["scripts_per_request"] = (self.script_calls() - calls) / requests
        calls = self.script_calls()
        rate = throughput(b, "chat", "gateway", port=port, cpus=LOAD_CPU, gateway=gw, mock=mock)
        # wrk counts the measured seconds only; the warm-up ran at about the same rate.
        requests = rate["rate"] * (b.args.warmup + rate["seconds"])
        rate["scripts_per_request"] = (self.script_calls() - calls) / max(requests, 1)
        return {"latency": lat, "throughput": rate}

    def script_calls(self) -> int:
        """How often Redis has run the counters' script."""
        return 0 if self.redis is None else script_stats(self.redis)[0]


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
    rounds: list[dict[str, Any]] = []
    try:
        with priority(args.nice), contextlib.ExitStack() as stack:
            redis_dir = root / "redis"
            redis_dir.mkdir()
            redis_port = free_port()
            redis = subprocess.Popen(
                ["taskset", "-c", LOAD_CPU, shutil.which("redis-server") or "redis-server",
                 "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(redis_dir)],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            stack.callback(redis.wait, 10)
            stack.callback(redis.terminate)
            benches = {}
            for side in ("off", "on"):
                (root / side).mkdir()
                benches[side] = Bench(
                    args=args, ws=prepare_workspace(root / side, database_url=None)
                )
            limits_on(benches["on"])
            mocks = {
                side: stack.enter_context(running(start_mock(b.ws, cpus=LOAD_CPU)))
                for side, b in benches.items()
            }
            redis_url = {"HEPAI_SERVER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
            configs = []
            for name, side, extra in (
                ("off", "off", {}),
                ("memory", "on", {}),
                ("redis", "on", redis_url),
            ):
                port = free_port()
                gw = stack.enter_context(running(gateway(benches[side], port, extra)))
                counted = Redis(port=redis_port) if extra else None
                configs.append(Config(name, benches[side], mocks[side], gw, port, counted))
            for number in range(args.rounds):
                print(f"# round {number + 1} of {args.rounds}", flush=True)
                order = configs[number % 3 :] + configs[: number % 3]
                rounds.append({config.name: config.measure() for config in order})
            if args.profile is not None:
                for config in configs:
                    raw = args.profile / f"limits-{config.name}.txt"
                    record(config.bench, config.gateway, config.port, raw)
    finally:
        if args.keep:
            print(f"workspace kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    summary = summarize_rounds(rounds)
    args.json.write_text(
        json.dumps({"summary": summary, "rounds": rounds}, indent=2, default=str) + "\n"
    )
    print()
    print(table(summary))


def summarize_rounds(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per configuration: the medians of its CPU a request and of its added p50 latency,
    and of each round's difference from off in the same round."""
    summary = {}
    for name in ("off", "memory", "redis"):
        cpu = [r[name]["throughput"]["gateway_cpu_ms"] for r in rounds]
        added = [r[name]["latency"]["total"]["added_p50_ms"] for r in rounds]
        off_cpu = [r["off"]["throughput"]["gateway_cpu_ms"] for r in rounds]
        off_added = [r["off"]["latency"]["total"]["added_p50_ms"] for r in rounds]
        summary[name] = {
            "cpu_ms": statistics.median(cpu),
            "cpu_vs_off_pct": statistics.median(
                100 * (mine / off - 1) for mine, off in zip(cpu, off_cpu, strict=True)
            ),
            "cpu_vs_off_pct_range": [
                100 * (mine / off - 1) for mine, off in zip(cpu, off_cpu, strict=True)
            ],
            "rate": statistics.median(r[name]["throughput"]["rate"] for r in rounds),
            "added_p50_ms": statistics.median(added),
            "added_p50_vs_off_ms": statistics.median(
                mine - off for mine, off in zip(added, off_added, strict=True)
            ),
            "added_p50_vs_off_ms_range": [
                mine - off for mine, off in zip(added, off_added, strict=True)
            ],
            "scripts_per_request_loaded": statistics.median(
                r[name]["throughput"]["scripts_per_request"] for r in rounds
            ),
            "scripts_per_request_c1": statistics.median(
                r[name]["latency"]["scripts_per_request"] for r in rounds
            ),
        }
    return summary


def table(summary: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| Limits | Gateway CPU ms/req | vs off (each round) | req/s | Added p50 ms (c=1) "
        "| vs off (each round) | Redis scripts/req: loaded, c=1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in (("off", "off"), ("memory", "on, in process"), ("redis", "on, Redis")):
        row = summary[name]
        cpu_range = ", ".join(f"{v:+.1f}" for v in row["cpu_vs_off_pct_range"])
        lat_range = ", ".join(f"{v:+.3f}" for v in row["added_p50_vs_off_ms_range"])
        scripts = (
            f"{row['scripts_per_request_loaded']:.2f}, {row['scripts_per_request_c1']:.2f}"
            if name == "redis"
            else ""
        )
        lines.append(
            f"| {label} | {row['cpu_ms']:.3f} | {row['cpu_vs_off_pct']:+.1f} % ({cpu_range}) "
            f"| {row['rate']:,.0f} | {row['added_p50_ms']:+.3f} "
            f"| {row['added_p50_vs_off_ms']:+.3f} ({lat_range}) | {scripts} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
