"""run_isolated: a conversion in a forked child with a memory cap and a deadline.

Document libraries can be driven into minutes of work or gigabytes of memory by one crafted
file. Each conversion therefore runs in a child forked from the warmed-up worker (no import
cost), with its address space capped; if it runs past its deadline it is killed, and if it
dies the caller gets an error. The worker itself never hangs and never runs out of memory.

A long conversion (a PDF of hundreds of pages) reports as it goes: given ``on_item``, the child
function gets an ``emit`` callable as its first argument, each emitted item reaches
``on_item`` in the caller's thread as soon as it is made, and the deadline then bounds the
time between two items rather than the whole run. Setting ``stop`` kills the child within
a fraction of a second: a cancelled task takes its conversion with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import resource
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from hepai_server.worker.model import TooLarge

T = TypeVar("T")

#: prctl(2): the signal a process gets when the thread that forked it ends.
PR_SET_PDEATHSIG = 1
#: Looked up once, in the worker: a forked child of a threaded process should not dlopen.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl
#: How often a caller that may be stopped looks at its stop flag while the child works.
STOP_POLL_SECONDS = 0.1


class ConversionFailed(RuntimeError):
    """The conversion died (a crash, or the memory cap): the document cannot be processed."""


class ConversionStopped(RuntimeError):
    """The caller set the stop flag; the child was killed."""


def _child(
    parent: int,
    connection: Connection,
    memory_bytes: int,
    function: Callable[..., Any],
    args: tuple[Any, ...],
    emits: bool,
) -> None:
    _detach(connection.fileno(), parent)
    # Conversions yield the CPU to the servers' event loops: a gateway sharing the machine
    # keeps answering promptly while documents convert. SCHED_IDLE runs them only on CPU
    # time nothing else wants (benchmarks/RESULTS.md, built-in workers).
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    # The cap is on top of what the child inherited, which it shares with the parent.
    pages = int(Path("/proc/self/statm").read_text().split()[0])
    inherited = pages * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (inherited + memory_bytes, inherited + memory_bytes))
    if emits:
        args = (lambda item: connection.send(("item", item)), *args)
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


def _detach(keep: int, parent: int) -> None:
    """Hold nothing of the worker's: die with it, and close its descriptors.

    A conversion that outlived a crashed worker would keep its port bound, so the restarted
    worker could not listen; and a connection the worker closes (an idle keep-alive) would
    stay open in the child, so the gateway would send its next call into a socket nobody
    reads.
    """
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the worker died before the line above took effect
        os._exit(1)
    # Only the descriptors that are open: the range up to the limit can be a billion long.
    # (multiprocessing's sentinel pipe goes too: run_isolated waits on the process instead.)
    for name in os.listdir("/proc/self/fd"):
        if (fd := int(name)) > 2 and fd != keep:
            with contextlib.suppress(OSError):  # the listing's own, closed already
                os.close(fd)


def run_isolated(
    function: Callable[..., T],
    *args: Any,
    timeout: float,
    memory_bytes: int,
    on_item: Callable[[Any], None] | None = None,
    stop: threading.Event | None = None,
) -> T:
    """``function(*args)`` in a forked child; blocking, so call it from a thread.

    With ``on_item``, ``function(emit, *args)``: see the module's docstring. Raises
    TimeoutError past ``timeout`` (without an item); ConversionStopped once ``stop`` is set;
    ValueError or TooLarge for bad input; else ConversionFailed.
    """
    context = multiprocessing.get_context("fork")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(
        target=_child,
        args=(os.getpid(), sending, memory_bytes, function, args, on_item is not None),
    )
    child.start()
    sending.close()
    try:
        answer = _answer(receiving, timeout, on_item, stop)
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


def _answer(
    receiving: Connection,
    timeout: float,
    on_item: Callable[[Any], None] | None,
    stop: threading.Event | None,
) -> tuple[Any, ...]:
    """The child's final message, handing its items to ``on_item`` on the way."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the conversion took longer than {timeout:g} s and was stopped")
        if stop is not None and stop.is_set():
            raise ConversionStopped("the conversion was stopped")
        if not receiving.poll(left if stop is None else min(left, STOP_POLL_SECONDS)):
            continue
        try:
            message: tuple[Any, ...] = receiving.recv()
        except EOFError:
            raise ConversionFailed("the conversion crashed") from None
        if message[0] != "item" or on_item is None:
            return message
        on_item(message[1])
        deadline = time.monotonic() + timeout


#: Errors that cross back from the child as themselves (they map to statuses, 400 and 413).
KNOWN: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "BadDocument": ValueError,
    "TooLarge": TooLarge,
    "DocumentTooLarge": TooLarge,
}
