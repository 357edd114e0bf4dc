"""Throughput load with wrk: closed-loop POSTs on keep-alive connections, bounded in time.

wrk (C, epoll) costs far less CPU per request than the servers under test, so it is not the
bottleneck; it reads each response to its end, so an SSE stream counts once it is complete.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

#: wrk reports through this Lua ``done`` hook: one line of JSON after the marker.
MARKER = "WRK_JSON "
LUA = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = [==[Bearer {key}]==]

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99)))
end
"""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    bytes: int
    errors: int
    error_detail: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    #: CPU time wrk itself used (user + system), from its rusage.
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: apt-get update && apt-get install -y wrk")
    return found


def write_script(path: Path, *, body: dict[str, object], api_key: str) -> Path:
    text = json.dumps(body, separators=(",", ":"))
    path.write_text(LUA.format(body=text, key=api_key, marker=MARKER))
    return path


def run_wrk(url: str, script: Path, *, connections: int, seconds: float, cpus: str) -> WrkResult:
    """One wrk run of ``seconds`` on one thread pinned to ``cpus``."""
    argv = [
        "taskset",
        "-c",
        cpus,
        wrk_binary(),
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    stdout, cpu = _run_measured(argv, limit=seconds + 30)
    return _parse(stdout, cpu)


def _run_measured(argv: list[str], *, limit: float) -> tuple[str, float]:
    """Run to completion; its output and the CPU seconds it used (reaped with wait4)."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # wrk stops itself after -d; the timer only guards against a hang.
    watchdog = threading.Timer(limit, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        stdout = process.stdout.read()
        _pid, status, usage = os.wait4(process.pid, 0)
    finally:
        watchdog.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    if process.returncode != 0:
        raise RuntimeError(f"{argv} exited {process.returncode}: {stdout[-2000:]}")
    return stdout, _cpu_of(usage)


def _cpu_of(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _parse(stdout: str, cpu: float) -> WrkResult:
    line = next((x for x in stdout.splitlines() if x.startswith(MARKER)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{stdout}")
    raw = json.loads(line[len(MARKER) :])
    detail = {
        name: raw[name]
        for name in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    }
    return WrkResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        bytes=raw["bytes"],
        errors=sum(detail.values()),
        error_detail=detail,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        cpu_seconds=cpu,
    )
