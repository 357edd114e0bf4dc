"""Benchmark the gateway against the bare mock upstream, side by side, in one run.

    .venv/bin/python benchmarks/run.py [--duration 10] [--profile] [--no-workers]

It makes a throwaway data dir with a user, an API key and a providers file, starts the mock
upstream and the gateway itself (key auth and usage recording on, as in production), measures,
stops everything, prints markdown tables and writes the raw numbers to benchmarks/results.json.
See benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from sqlalchemy import create_engine, text

from flame import start_recording, summarize, wait_recording
from measure import CpuWindow, Load, all_cores, measure, wait_for_quiet, workers_of
from procfs import command_line, memory_kb
from report import render
from seqlatency import Samples, Target, paired, percentile
from services import (
    EXPERIMENTS,
    MODEL,
    Service,
    Workspace,
    free_port,
    prepare_workspace,
    start_gateway,
    start_mock,
)
from wrkload import run_wrk, write_script

HERE = Path(__file__).resolve().parent
#: The gateway gets core 0 to itself; the mock, wrk, py-spy and this harness share core 1.
GATEWAY_CPU, LOAD_CPU, SHARED_CPUS = "0", "1", "0,1"
KINDS = ("chat", "stream")
PACKAGES = (
    "hepai-server",
    "uvicorn",
    "uvloop",
    "httptools",
    "starlette",
    "aiohttp",
    "orjson",
    "sqlalchemy",
    "psycopg",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="Seconds per measurement.")
    parser.add_argument("--warmup", type=float, default=2, help="Seconds of load before each.")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections.")
    parser.add_argument("--chunks", type=int, default=20, help="Content chunks per stream.")
    parser.add_argument(
        "--latency-seconds", type=float, default=5, help="Seconds per concurrency-1 series."
    )
    parser.add_argument(
        "--no-workers", action="store_true", help="Skip the --workers 1 vs 2 comparison."
    )
    parser.add_argument(
        "--profile", action="store_true", help="Also record the gateway with py-spy under load."
    )
    parser.add_argument(
        "--native", action="store_true", help="With --profile: unwind C frames (pauses it)."
    )
    parser.add_argument("--profile-dir", type=Path, default=HERE / "profiles")
    parser.add_argument(
        "--database-url",
        default=None,
        help="Use this database instead of a fresh SQLite file (e.g. postgresql://...).",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=10,
        help="Seconds to wait, before each measurement, for other work on the machine to stop.",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="Run the harness and everything it starts at nice -N (root only), so that other "
        "work on a shared machine disturbs the measurements less.",
    )
    parser.add_argument(
        "--patch",
        action="append",
        default=[],
        choices=sorted(path.stem for path in EXPERIMENTS.glob("*.py")),
        help="Load this what-if or diagnostic module of benchmarks/experiments/ into the "
        "gateway (repeatable). The report says so: it is not the gateway as shipped.",
    )
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument("--keep-workdir", action="store_true", help="Keep logs and the data dir.")
    return parser.parse_args()


@dataclass
class Bench:
    """What every phase needs: the settings, the workspace and the wrk scripts."""

    args: argparse.Namespace
    ws: Workspace
    scripts: dict[tuple[str, str], Path] = field(default_factory=dict)
    #: Requests the clients completed through the gateway, to check against the usage rows.
    completed: int = 0

    def body(self, kind: str) -> dict[str, Any]:
        """A typical small chat request; the mock answers with ``--chunks`` words."""
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Say hello in one short sentence, please."},
            ],
            "max_tokens": 64,
            "temperature": 0.7,
            "mock": {"chunks": self.args.chunks},
        }
        if kind == "stream":
            body["stream"] = True
        return body

    def gateway(self, *, port: int, workers: int, cpus: str) -> Service:
        return start_gateway(
            self.ws, port=port, workers=workers, cpus=cpus, patches=self.args.patch
        )

    def key(self, side: str) -> str:
        return self.ws.upstream_key if side == "mock" else self.ws.api_key

    def script(self, kind: str, side: str) -> Path:
        if (kind, side) not in self.scripts:
            path = self.ws.root / f"{kind}-{side}.lua"
            self.scripts[kind, side] = write_script(
                path, body=self.body(kind), api_key=self.key(side)
            )
        return self.scripts[kind, side]


def url(side: str, port: int) -> str:
    path = "/v1/chat/completions" if side == "mock" else "/apiv2/chat/completions"
    return f"http://127.0.0.1:{port}{path}"


@contextmanager
def running(service: Service) -> Iterator[Service]:
    try:
        yield service
    finally:
        service.stop()


def throughput(
    b: Bench, kind: str, side: str, *, port: int, cpus: str, gateway: Service, mock: Service
) -> dict[str, Any]:
    load = Load(url(side, port), b.script(kind, side), b.args.connections, b.args.duration, cpus)
    label = f"{kind} → {side} ({gateway.name})"
    print(f"- throughput: {label}", flush=True)
    result = measure(
        label,
        load,
        gateway=gateway,
        mock=mock,
        through_gateway=side == "gateway",
        warmup=b.args.warmup,
        quiet_wait=b.args.quiet_wait,
    )
    if result.errors:
        raise RuntimeError(f"{label}: {result.errors} failed requests; see the logs")
    if side == "gateway":
        # wrk's count excludes its warm-up; the usage check only needs a lower bound.
        b.completed += result.requests
    print(
        f"  {result.rate:,.0f}/s, gateway {result.gateway_cpu_ms:.3f} ms CPU/req, "
        f"{result.gateway_cores:.2f} gateway cores, {result.interfering_cores:.2f} cores "
        "taken by others"
    )
    return result.as_dict()


def latency(b: Bench, kind: str, *, mock: Service, gateway: Service, port: int) -> dict[str, Any]:
    """Concurrency-1 series through both paths; the added latency is the difference."""
    print(f"- latency at concurrency 1: {kind}", flush=True)
    targets = (
        Target("mock", url("mock", b.ws.mock_port), b.key("mock")),
        Target("gateway", url("gateway", port), b.key("gateway")),
    )
    coro = paired(targets, b.body(kind), stream=kind == "stream", seconds=b.args.latency_seconds)
    ours = [mock.pid, *gateway.pids()]
    quiet = wait_for_quiet(ours, max_wait=b.args.quiet_wait)
    window = CpuWindow(ours)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        samples = runner.run(coro)
    usage = window.close()
    # Nothing is saturated at concurrency 1, but any other task delays a wake-up on either core.
    untracked = usage.others(all_cores(), sum(usage.used.values()) + usage.harness)
    requests = len(samples["gateway"].total_us)
    b.completed += requests
    # A wake-up that waits for the CPU is latency the gateway's own code did not cause.
    loop_wait_us = 1e6 * usage.waits[gateway.pid] / max(requests, 1)
    metrics = {"total": summarize_pairs(samples, "total_us")}
    if kind == "stream":
        metrics["ttft"] = summarize_pairs(samples, "first_us")
    for metric, m in metrics.items():
        m |= {"untracked_cores": untracked, "interfering_cores": untracked}
        m |= {"top_others": usage.top_others, "loop_wait_us_per_request": loop_wait_us}
        m |= {"quiet_before": quiet, "label": f"{kind} {metric}"}
        print(f"  {metric}: +{m['added_p50_ms']:.3f} ms at p50 ({m['gateway_p50_ms']:.3f} ms)")
    return metrics


def summarize_pairs(samples: dict[str, Samples], attribute: str) -> dict[str, Any]:
    mock, gateway = getattr(samples["mock"], attribute), getattr(samples["gateway"], attribute)
    summary: dict[str, Any] = {"pairs": min(len(mock), len(gateway))}
    for q in (50, 90, 99):
        m_ms, g_ms = percentile(mock, q) / 1000, percentile(gateway, q) / 1000
        summary |= {f"mock_p{q}_ms": m_ms, f"gateway_p{q}_ms": g_ms, f"added_p{q}_ms": g_ms - m_ms}
    return summary


def peak_rss(gateway: Service, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Memory of every gateway process (read before it stops).

    under_load_mb: the largest RSS sampled during the throughput measurements. peak_mb: VmHWM,
    the peak since the process started, startup included.
    """
    workers = set(workers_of(gateway))
    rows = []
    for pid in gateway.pids():
        cmd = command_line(pid)
        role = (
            "worker"
            if pid in workers
            else "resource tracker"
            if "resource_tracker" in cmd
            else "supervisor"
        )
        under_load = max((run["rss_mb"].get(pid, 0.0) for run in runs), default=0.0)
        rows.append(
            {
                "pid": pid,
                "role": role,
                "under_load_mb": under_load,
                "peak_mb": memory_kb(pid, "VmHWM") / 1024,
            }
        )
    return rows


def profile(b: Bench, gateway: Service, port: int) -> dict[str, Any]:
    """py-spy on the pinned gateway under the same load; a separate run, so the headline
    numbers above are not perturbed by sampling."""
    b.args.profile_dir.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for kind in KINDS:
        print(f"- profile: {kind}", flush=True)
        raw = b.args.profile_dir / f"gateway-{kind}{'-native' if b.args.native else ''}.txt"
        script = b.script(kind, "gateway")
        seconds = b.args.duration
        connections = b.args.connections
        run_wrk(url("gateway", port), script, connections=connections, seconds=1, cpus=LOAD_CPU)
        # py-spy stops a second before wrk, so every sample is taken under full load.
        recorder = start_recording(
            gateway.pid, seconds=seconds - 1, out=raw, cpus=LOAD_CPU, native=b.args.native
        )
        result = run_wrk(
            url("gateway", port), script, connections=connections, seconds=seconds, cpus=LOAD_CPU
        )
        b.completed += result.requests
        wait_recording(recorder, timeout=seconds + 30)
        summaries[kind] = asdict(summarize(raw))
        print(f"  {raw}")
    return summaries


def pinned_phase(b: Bench) -> dict[str, Any]:
    """Gateway alone on core 0; everything else on core 1."""
    port = free_port()
    with (
        running(start_mock(b.ws, cpus=LOAD_CPU)) as mock,
        running(b.gateway(port=port, workers=1, cpus=GATEWAY_CPU)) as gateway,
    ):
        # Latency first, on a gateway not yet filled with the garbage of a load test.
        lat = {kind: latency(b, kind, mock=mock, gateway=gateway, port=port) for kind in KINDS}
        runs: dict[str, dict[str, Any]] = {}
        for kind in KINDS:
            runs[kind] = {
                side: throughput(
                    b,
                    kind,
                    side,
                    port=b.ws.mock_port if side == "mock" else port,
                    cpus=LOAD_CPU,
                    gateway=gateway,
                    mock=mock,
                )
                for side in ("mock", "gateway")
            }
        profiles = profile(b, gateway, port) if b.args.profile else None
        rss = peak_rss(gateway, [run for pair in runs.values() for run in pair.values()])
    return {"latency": lat, "throughput": runs, "rss": rss, "profile": profiles}


def workers_phase(b: Bench) -> dict[str, Any]:
    """--workers 1 and 2 with every process free to use both cores (see README.md)."""
    out: dict[str, Any] = {}
    with running(start_mock(b.ws, cpus=SHARED_CPUS)) as mock:
        for workers in (1, 2):
            port = free_port()
            cpus = SHARED_CPUS
            with running(b.gateway(port=port, workers=workers, cpus=cpus)) as gateway:
                config: dict[str, Any] = {
                    kind: throughput(
                        b, kind, "gateway", port=port, cpus=cpus, gateway=gateway, mock=mock
                    )
                    for kind in KINDS
                }
                config["rss"] = peak_rss(gateway, [config[kind] for kind in KINDS])
            out[f"w{workers}"] = config
    return out


def scaling_summary(pinned: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """How much a second worker adds.

    measured: rate with 2 workers / rate with 1, both on the shared cores.
    efficiency: requests per gateway CPU-second with 2 workers / with 1 (the pinned run).
    projected: 2 cores' worth of the 2-worker per-core rate / the pinned 1-worker rate, i.e.
    the speed-up if each worker had a core of its own and the load came from elsewhere.
    """
    summary: dict[str, dict[str, float]] = {"shared_speedup": {}, "efficiency": {}}
    summary["projected_speedup"] = {}
    for kind in KINDS:
        one, two, alone = shared["w1"][kind], shared["w2"][kind], pinned["throughput"][kind]
        per_core_two = two["rate"] / two["gateway_cores"]
        per_core_alone = alone["gateway"]["rate"] / alone["gateway"]["gateway_cores"]
        summary["shared_speedup"][kind] = two["rate"] / one["rate"]
        summary["efficiency"][kind] = per_core_two / per_core_alone
        summary["projected_speedup"][kind] = 2 * per_core_two / alone["gateway"]["rate"]
    return summary


def usage_rows(b: Bench) -> dict[str, Any]:
    """Count the benchmark user's usage rows, after every gateway has drained and stopped."""
    url_ = b.ws.database_url
    for plain in ("postgresql://", "postgres://"):
        if url_.startswith(plain):
            url_ = "postgresql+psycopg://" + url_.removeprefix(plain)
    engine = create_engine(url_)
    query = text(
        "SELECT r.status_code, count(*), sum(CASE WHEN r.usage_estimated THEN 1 ELSE 0 END) "
        "FROM usage_records r JOIN users u ON u.id = r.user_id "
        "WHERE u.username = :name GROUP BY r.status_code ORDER BY r.status_code"
    )
    try:
        with engine.connect() as connection:
            rows = connection.execute(query, {"name": b.ws.username}).all()
    finally:
        engine.dispose()
    total = sum(row[1] for row in rows)
    return {
        "rows": total,
        "by_status": {str(row[0]): row[1] for row in rows},
        "estimated": sum(row[2] or 0 for row in rows),
        "completed": b.completed,
        "ok": total >= b.completed,
    }


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": (wrk_version.stdout or wrk_version.stderr).splitlines()[0],
        "packages": {name: _version(name) for name in PACKAGES},
        "git_commit": git_commit(),
        "source_sha256": source_digest(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def git_commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "none"


def source_digest() -> str:
    """A digest of src/ as measured: the tree may hold uncommitted changes."""
    digest = hashlib.sha256()
    for path in sorted((HERE.parent / "src").rglob("*.py")):
        digest.update(str(path.relative_to(HERE.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def shown(value: Any) -> Any:
    """A setting as results.json records it: paths relative to the repository when inside it."""
    if not isinstance(value, Path):
        return value
    path = value.resolve()
    return str(path.relative_to(HERE.parent)) if path.is_relative_to(HERE.parent) else str(path)


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    print(f"workspace {root}", flush=True)
    b = Bench(args=args, ws=prepare_workspace(root, database_url=args.database_url))
    settings = {key: shown(value) for key, value in vars(args).items()}
    results: dict[str, Any] = {"machine": machine(), "settings": settings}
    results["pinned"] = pinned_phase(b)
    results["profile"] = results["pinned"].pop("profile")
    if not args.no_workers:
        shared = workers_phase(b)
        results["scaling"] = shared | scaling_summary(results["pinned"], shared)
    results["usage_rows"] = usage_rows(b)
    return results


@contextmanager
def priority(boost: int) -> Iterator[None]:
    """Run at nice -``boost``: this process and, by inheritance, all it starts.

    With autogroup scheduling (Linux's default) CPU is shared between sessions first and nice
    only orders tasks within one, so the session's autogroup is raised too, and put back after.
    """
    if not boost:
        yield
        return
    autogroup = Path("/proc/self/autogroup")
    before = int(autogroup.read_text().split()[-1]) if autogroup.exists() else None
    os.setpriority(os.PRIO_PROCESS, 0, -boost)
    if before is not None:
        autogroup.write_text(str(-boost))
    try:
        yield
    finally:
        if before is not None:
            autogroup.write_text(str(before))


def main() -> None:
    args = parse_args()
    if args.duration < 3:
        raise SystemExit("--duration must be at least 3 seconds")
    # The harness idles while wrk runs, but keep it off the gateway's core all the same.
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    # A SIGTERM unwinds like Ctrl-C, so every server started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="hepai-bench-"))
    try:
        with priority(args.nice):
            results = run(args, root)
    except BaseException:
        print(f"\nfailed; logs are in {root / 'logs'}", file=sys.stderr)
        raise
    else:
        if not args.keep_workdir:
            shutil.rmtree(root, ignore_errors=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(render(results))
    print(f"\nraw numbers: {args.json}")


if __name__ == "__main__":
    main()
