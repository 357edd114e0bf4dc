"""Diagnostic only: which objects die in reference cycles (and so wait for the cyclic GC).

With DEBUG_SAVEALL the collector keeps what it would have freed; every 3 seconds the types are
counted into $HEPAI_BENCH_OUT/cycles-<pid>.txt and the objects let go. It slows the gateway.
"""

from __future__ import annotations

import collections
import gc
import os
import threading
import time
from pathlib import Path

_OUT = Path(os.environ.get("HEPAI_BENCH_OUT", "/tmp")) / f"cycles-{os.getpid()}.txt"


def _census() -> None:
    while True:
        time.sleep(3)
        garbage = list(gc.garbage)
        gc.garbage.clear()
        counts = collections.Counter(type(item).__qualname__ for item in garbage)
        del garbage
        with _OUT.open("a") as out:
            out.write(f"--- {time.strftime('%X')}: {sum(counts.values())} objects\n")
            out.writelines(f"{n:8d} {name}\n" for name, n in counts.most_common(20))


gc.set_debug(gc.DEBUG_SAVEALL)
threading.Thread(target=_census, name="cycle-census", daemon=True).start()
