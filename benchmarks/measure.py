"""One throughput measurement: a wrk run with the CPU of every process involved accounted for.

Besides the rate, it records what each side cost: gateway CPU per request (the figure the
targets are about), the mock's, wrk's, and how much CPU something else on the machine used
meanwhile, so a noisy run can be recognised rather than believed.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from procfs import (
    all_processes,
    command_line,
    core_times,
    cpu_seconds,
    memory_kb,
    runqueue_wait_seconds,
)
from services import Service
from wrkload import run_wrk

#: Untracked CPU (in cores) below which the machine counts as quiet before a measurement.
QUIET_CORES = 0.15


@dataclass(frozen=True, slots=True)
class Load:
    """What wrk sends, where, and how hard."""

    url: str
    script: Path
    connections: int
    seconds: float
    cpus: str


@dataclass(slots=True)
class Throughput:
    label: str
    rate: float
    requests: int
    errors: int
    seconds: float
    client_p50_ms: float
    client_p99_ms: float
    gateway_cpu_ms: float
    """Gateway CPU per completed request (all its processes and threads)."""
    gateway_cores: float
    """Gateway CPU seconds per wall second: 1.0 is one core fully busy."""
    worker_shares: list[float]
    """Each serving process's share of the gateway's CPU (one entry per worker)."""
    mock_cpu_ms: float
    mock_cores: float
    wrk_cores: float
    untracked_cores: float
    """CPU used meanwhile by processes this benchmark did not start (user + system time)."""
    interfering_cores: float
    """The part of it on the cores the measured server ran on (all of it when nothing is
    pinned): CPU it did not get. The rest only used idle time on the other core."""
    top_others: dict[str, float]
    loop_wait_ms_per_s: float
    """How long the gateway's event loop(s) waited, runnable, for a CPU, per wall second."""
    rss_mb: dict[int, float]
    """The largest RSS of each gateway process during the measurement."""
    steal_cores: float
    quiet_before: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Usage:
    """What happened during a CpuWindow."""

    wall: float
    used: dict[int, float]
    """CPU seconds of each watched pid."""
    busy: dict[int, float]
    """Busy seconds of each core, whoever ran on it."""
    steal: float
    harness: float
    """CPU seconds of this process (the harness, and the latency client in it)."""
    waits: dict[int, float]
    """Seconds each watched pid's main thread waited, runnable, for a CPU."""
    top_others: dict[str, float]

    def others(self, cores: set[int], ours: float) -> float:
        """Cores' worth of CPU that other processes used on ``cores``, beside ``ours``."""
        return (sum(self.busy[core] for core in cores) - ours) / self.wall


class CpuWindow:
    """CPU accounting over a stretch of time: each process we watch, and every core."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._others = all_processes()
        self._cores = core_times()
        self._cpu = [cpu_seconds(pid) for pid in pids]
        self._waits = [runqueue_wait_seconds(pid) for pid in pids]
        self._self = time.process_time()
        self._started = time.monotonic()

    def close(self) -> Usage:
        after = core_times()
        wall = time.monotonic() - self._started
        return Usage(
            wall=wall,
            used={
                pid: cpu_seconds(pid) - before
                for pid, before in zip(self.pids, self._cpu, strict=True)
            },
            busy={core: after[core].busy - t.busy for core, t in self._cores.items()},
            steal=sum(after[core].steal - t.steal for core, t in self._cores.items()),
            harness=time.process_time() - self._self,
            waits={
                pid: runqueue_wait_seconds(pid) - before
                for pid, before in zip(self.pids, self._waits, strict=True)
            },
            top_others=self._top_others(wall),
        )

    def _top_others(self, wall: float, keep: int = 3) -> dict[str, float]:
        """Who else ran, by command name (a kernel thread, a neighbour's test run...).

        Processes that started and ended within the window are not seen here, only in the
        cores' busy time.
        """
        mine = {*self.pids, os.getpid()}
        used: dict[str, float] = {}
        for pid, (comm, cpu) in all_processes().items():
            if pid in mine or pid not in self._others:
                continue
            delta = cpu - self._others[pid][1]
            if delta > 0:
                used[comm] = used.get(comm, 0.0) + delta / wall
        ranked = sorted(used.items(), key=lambda item: -item[1])[:keep]
        return {name: round(cores, 3) for name, cores in ranked}


class RssSampler:
    """The largest VmRSS each process reached while a measurement ran, sampled every 0.2 s.

    VmHWM alone would not do: it also holds transient peaks from startup (imports, migrations).
    """

    def __init__(self, pids: list[int], interval: float = 0.2) -> None:
        self.peak_kb = dict.fromkeys(pids, 0)
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        for pid in self.peak_kb:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                self.peak_kb[pid] = max(self.peak_kb[pid], memory_kb(pid, "VmRSS"))


def all_cores() -> set[int]:
    return set(core_times())


def cpu_set(cpus: str) -> set[int]:
    """``"0,1"`` -> {0, 1} (taskset's list form; ranges are not used here)."""
    return {int(cpu) for cpu in cpus.split(",")}


def workers_of(gateway: Service) -> list[int]:
    """The processes that serve requests: uvicorn's spawned workers, or the server itself."""
    spawned = [pid for pid in gateway.pids() if "spawn_main" in command_line(pid)]
    return spawned or [gateway.pid]


def wait_for_quiet(ours: list[int], *, max_wait: float) -> float:
    """Sample one-second windows until nothing but our idle processes uses CPU.

    Returns the untracked cores of the last window; gives up after ``max_wait`` seconds, since
    a machine shared with other work may never be fully quiet (the report flags such runs).
    """
    started = time.monotonic()
    while True:
        window = CpuWindow(ours)
        time.sleep(1.0)
        usage = window.close()
        untracked = usage.others(all_cores(), sum(usage.used.values()) + usage.harness)
        waited = time.monotonic() - started
        if untracked < QUIET_CORES or waited > max_wait:
            if waited > 1.5:
                print(f"  waited {waited:.0f} s for quiet; {untracked:.2f} cores busy elsewhere")
            return untracked
        if waited < 1.5:
            others = ", ".join(f"{name} {cores:.2f}" for name, cores in usage.top_others.items())
            print(f"  waiting for the machine to be quiet: {untracked:.2f} cores busy ({others})")


def measure(
    label: str,
    load: Load,
    *,
    gateway: Service,
    mock: Service,
    through_gateway: bool,
    warmup: float,
    quiet_wait: float,
) -> Throughput:
    run_wrk(load.url, load.script, connections=load.connections, seconds=warmup, cpus=load.cpus)
    gateway_pids, workers = gateway.pids(), workers_of(gateway)
    quiet = wait_for_quiet([*gateway_pids, mock.pid], max_wait=quiet_wait)

    window = CpuWindow(list(dict.fromkeys([*gateway_pids, *workers, mock.pid])))
    with RssSampler(gateway_pids) as rss:
        result = run_wrk(
            load.url,
            load.script,
            connections=load.connections,
            seconds=load.seconds,
            cpus=load.cpus,
        )
    usage = window.close()
    gateway_cpu = sum(usage.used[pid] for pid in gateway_pids)
    worker_cpu = [usage.used[pid] for pid in workers]
    mock_cpu = usage.used[mock.pid]
    load_cpu = mock_cpu + result.cpu_seconds + usage.harness

    untracked = usage.others(all_cores(), gateway_cpu + load_cpu)
    gateway_cores, load_cores = cpu_set(gateway.cpus), cpu_set(load.cpus)
    if gateway_cores.isdisjoint(load_cores) and cpu_set(mock.cpus) == load_cores:
        # Pinned: only what ran on the measured server's own core was in its way.
        interfering = (
            usage.others(gateway_cores, gateway_cpu)
            if through_gateway
            else usage.others(load_cores, load_cpu)
        )
    else:
        interfering = untracked

    wall = result.seconds
    done = max(result.requests, 1)
    return Throughput(
        label=label,
        rate=result.rate,
        requests=result.requests,
        errors=result.errors,
        seconds=wall,
        client_p50_ms=result.p50_ms,
        client_p99_ms=result.p99_ms,
        gateway_cpu_ms=1000 * gateway_cpu / done,
        gateway_cores=gateway_cpu / wall,
        worker_shares=[cpu / (sum(worker_cpu) or 1) for cpu in worker_cpu],
        mock_cpu_ms=1000 * mock_cpu / done,
        mock_cores=mock_cpu / wall,
        wrk_cores=result.cpu_seconds / wall,
        untracked_cores=untracked,
        interfering_cores=interfering,
        top_others=usage.top_others,
        loop_wait_ms_per_s=1000 * sum(usage.waits[pid] for pid in workers) / usage.wall,
        rss_mb={pid: kb / 1024 for pid, kb in rss.peak_kb.items()},
        steal_cores=usage.steal / usage.wall,
        quiet_before=quiet,
    )
