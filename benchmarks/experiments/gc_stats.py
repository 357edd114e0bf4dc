"""Measurement only: count and time every garbage collection, per generation.

Each second it rewrites $HEPAI_BENCH_OUT/gc-stats-<pid>.txt with the totals so far (uvicorn ends
on the signal it caught, so an atexit hook would never run).
"""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path
from typing import Any

_OUT = Path(os.environ.get("HEPAI_BENCH_OUT", "/tmp")) / f"gc-stats-{os.getpid()}.txt"
#: generation -> [collections, seconds, objects collected]
_TOTALS: dict[int, list[float]] = {generation: [0, 0.0, 0] for generation in range(3)}
_started = [0.0]


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    totals = _TOTALS[info["generation"]]
    totals[0] += 1
    totals[1] += time.perf_counter() - _started[0]
    totals[2] += info["collected"]


def _report() -> None:
    while True:
        time.sleep(1)
        lines = [f"process CPU {time.process_time():.2f} s, frozen {gc.get_freeze_count()}"]
        for generation, (count, seconds, collected) in _TOTALS.items():
            each = seconds / count * 1e6 if count else 0
            lines.append(
                f"gen{generation}: {count:.0f} collections, {seconds * 1000:.0f} ms "
                f"({each:.0f} us each), {collected:.0f} objects freed"
            )
        _OUT.write_text("\n".join(lines) + "\n")


gc.callbacks.append(_on_gc)
threading.Thread(target=_report, name="gc-stats", daemon=True).start()
