"""Where the gateway's CPU goes: a py-spy recording taken under load, and its summary.

py-spy samples the running process from outside (no code change, ``--nonblocking`` so the
gateway is never paused); idle samples are dropped, so shares are of CPU time actually used.
The raw output is Brendan Gregg's collapsed-stack format: ``frame;frame;... count`` per line,
each frame ``function (file:line)``; feed it to flamegraph.pl or speedscope for a picture.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

#: hepai_server functions listed inclusively in the summary, whatever their rank.
OWN_PACKAGE = "hepai_server/"
#: Frames under which the whole event loop runs: "100% inclusive" says nothing about them.
ROOTS = ("hepai_server/cli/",)


def pyspy_binary() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def start_recording(
    pid: int, *, seconds: float, out: Path, cpus: str, native: bool = False
) -> subprocess.Popen[bytes]:
    """Start py-spy on ``pid`` in the background; it stops by itself after ``seconds``."""
    argv = [
        "taskset",
        "-c",
        cpus,
        pyspy_binary(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(round(seconds)),
        "--rate",
        "250",
        "--function",  # one entry per function, not per line
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    # Native unwinding needs the process paused while its stack is read.
    argv += ["--native"] if native else ["--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_recording(process: subprocess.Popen[bytes], *, timeout: float) -> None:
    _out, err = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")


@dataclass(slots=True)
class Profile:
    """Shares (percent of sampled CPU) by leaf function, by package, and inclusive."""

    samples: int
    self_functions: list[tuple[str, float]] = field(default_factory=list)
    self_packages: list[tuple[str, float]] = field(default_factory=list)
    inclusive_own: list[tuple[str, float]] = field(default_factory=list)
    inclusive_all: list[tuple[str, float]] = field(default_factory=list)


def summarize(raw: Path, *, top: int = 25) -> Profile:
    leaf: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf[frames[-1]] += count
        packages[package_of(frames[-1])] += count
        for frame in set(frames):  # a recursive frame counts once per sample
            inclusive[frame] += count
    if total == 0:
        return Profile(samples=0)

    def shares(counter: Counter[str], keep: int) -> list[tuple[str, float]]:
        return [(name, 100 * n / total) for name, n in counter.most_common(keep)]

    own = Counter(
        {frame: n for frame, n in inclusive.items() if OWN_PACKAGE in frame and not _is_root(frame)}
    )
    return Profile(
        samples=total,
        self_functions=shares(leaf, top),
        self_packages=shares(packages, top),
        inclusive_own=shares(own, top),
        inclusive_all=shares(inclusive, top * 2),
    )


def _is_root(frame: str) -> bool:
    return any(root in frame for root in ROOTS)


def package_of(frame: str) -> str:
    """``ClientSession._request (aiohttp/client.py:558)`` -> ``aiohttp``.

    py-spy names files relative to their sys.path entry, so the first path part is the
    package; standard-library modules are grouped as ``stdlib:<name>``, C code as ``native:``.
    """
    where = frame.rpartition(" (")[2].rstrip(")")
    path = where.rpartition(":")[0] or where
    top = path.split("/", 1)[0].removesuffix(".py")
    if top in sys.stdlib_module_names:
        return "stdlib:" + top
    if "/" in path or path.endswith(".py") or "." not in path:
        return top  # a package, a top-level module, or the hepai-server script itself
    return "native:" + path  # libc.so.6, loop.c (uvloop), object.h (CPython)
