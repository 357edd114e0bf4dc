"""run_isolated: a conversion in a forked child with a memory cap and a deadline.

Document libraries can be driven into minutes of work or gigabytes of memory by one crafted
file. Each conversion therefore runs in a child forked from the warmed-up worker (no import
cost), with its address space capped; if it runs past its deadline it is killed, and if it
dies the caller gets an error. The worker itself never hangs and never runs out of memory.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from hepai_server.worker.model import TooLarge

T = TypeVar("T")


class ConversionFailed(RuntimeError):
    """The conversion died (a crash, or the memory cap): the document cannot be processed."""


def _child(
    connection: Connection, memory_bytes: int, function: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    # Conversions yield the CPU to the servers' event loops: a gateway sharing the machine
    # keeps answering promptly while documents convert. SCHED_IDLE runs them only on CPU
    # time nothing else wants (benchmarks/RESULTS.md, built-in workers).
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    # The cap is on top of what the child inherited, which it shares with the parent.
    pages = int(Path("/proc/self/statm").read_text().split()[0])
    inherited = pages * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (inherited + memory_bytes, inherited + memory_bytes))
    try:
        connection.send(("ok", function(*args)))
    except MemoryError:
        connection.send(
            ("error", "ConversionFailed", "the document needs more memory than allowed")
        )
    except BaseException as exc:
        connection.send(("error", type(exc).__name__, str(exc) or traceback.format_exc(limit=1)))
    finally:
        connection.close()


def run_isolated(function: Callable[..., T], *args: Any, timeout: float, memory_bytes: int) -> T:
    """``function(*args)`` in a forked child; blocking, so call it from a thread.

    Raises TimeoutError past ``timeout``; ValueError or TooLarge for bad input; else
    ConversionFailed.
    """
    context = multiprocessing.get_context("fork")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sending, memory_bytes, function, args))
    child.start()
    sending.close()
    try:
        if not receiving.poll(timeout):
            raise TimeoutError(f"the conversion took longer than {timeout:g} s and was stopped")
        try:
            answer = receiving.recv()
        except EOFError:
            raise ConversionFailed("the conversion crashed") from None
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receiving.close()
    if answer[0] == "ok":
        return answer[1]  # type: ignore[no-any-return]
    _, kind, message = answer
    if kind in KNOWN:
        raise KNOWN[kind](message)
    raise ConversionFailed(f"{kind}: {message}")


#: Errors that cross back from the child as themselves (they map to statuses, 400 and 413).
KNOWN: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "BadDocument": ValueError,
    "TooLarge": TooLarge,
    "DocumentTooLarge": TooLarge,
}
