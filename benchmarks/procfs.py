"""Readers for /proc: CPU time and memory of processes, and busy time of each core.

The benchmark reads these instead of asking the processes, so the gateway runs unmodified.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads included (0 once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # Field 2, the command name, may hold spaces and parentheses: read after the last ')'.
    fields = raw.rpartition(")")[2].split()
    # fields[0] is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def runqueue_wait_seconds(pid: int) -> float:
    """Time the process's main thread (the gateway's event loop) spent runnable but waiting
    for a CPU, from /proc/<pid>/schedstat (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def all_processes() -> dict[int, tuple[str, float]]:
    """Every process on the machine: its command name and CPU seconds so far."""
    found: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # it exited while we looked
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rpartition(")")[2].split()
        found[int(entry.name)] = (comm, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return found


def memory_kb(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory line in kB: VmRSS (now) or VmHWM (peak since start)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def command_line(pid: int) -> str:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def children(pid: int) -> list[int]:
    """Direct children of every thread of ``pid``."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue  # the thread ended while we looked
    return found


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children(pending.pop()):
            found.append(child)
            pending.append(child)
    return found


@dataclass(frozen=True, slots=True)
class CoreTimes:
    """Seconds one core spent running anything (user, nice, system) and stolen by the host."""

    busy: float
    steal: float


def core_times() -> dict[int, CoreTimes]:
    """Per-core counters from /proc/stat.

    IRQ and softirq time are left out of ``busy``: loopback traffic is processed in softirq
    and is part of every measurement, whereas ``busy`` is compared with the CPU time of the
    processes we know in order to see what else is running on the machine.
    """
    cores: dict[int, CoreTimes] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(v) for v in values[:8])
        cores[int(name[3:])] = CoreTimes(
            busy=(user + nice + system) / CLOCK_TICKS, steal=steal / CLOCK_TICKS
        )
    return cores
