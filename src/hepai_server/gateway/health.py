"""Health: whether this process is alive, whether it should get traffic, and draining.

Ready means the database answers within one budget (READY_BUDGET), Redis too when one is
configured, and the process is not draining. Draining begins at SIGTERM when
``drain_seconds`` is set: readiness fails at once so the load balancer moves traffic away,
requests are still served (each answer closing its connection) until the time is up, and then
the server stops as it always does, letting running requests finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import FrameType

from sqlalchemy import Engine, text

from hepai_server.state.resp import Connection, ReplyError

log = logging.getLogger(__name__)

#: Seconds readiness may take in all; a dependency slower than this counts as down.
READY_BUDGET = 1.0


@dataclass(slots=True)
class Health:
    """What readiness checks, and the draining flag SIGTERM raises."""

    #: An unpooled engine: readiness asks whether the database answers, not whether the pool
    #: has a free connection (a busy pool is load, and load is no reason to leave rotation).
    probe: Engine
    redis_url: str | None = None
    draining: bool = False
    #: The database check still running, if one outlived its budget: the next probe waits for
    #: it instead of stacking another thread on a database that does not answer.
    _pending: asyncio.Future[None] | None = field(default=None, repr=False)

    async def ready(self) -> tuple[bool, dict[str, str]]:
        """Whether to send this process traffic, and each check's verdict."""
        checks: dict[str, asyncio.Task[str]] = {
            "database": asyncio.ensure_future(timed(asyncio.shield(self._database()))),
        }
        if self.redis_url:
            checks["redis"] = asyncio.ensure_future(timed(ping_redis(self.redis_url)))
        verdicts = {name: await task for name, task in checks.items()}
        verdicts["draining"] = "yes" if self.draining else "no"
        ok = not self.draining and all(
            verdict == "ok" for name, verdict in verdicts.items() if name != "draining"
        )
        return ok, verdicts

    def _database(self) -> asyncio.Future[None]:
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(asyncio.to_thread(select_one, self.probe))
            # A check that outlived its budget ends unobserved: take its error here, or
            # asyncio logs it as never retrieved.
            self._pending.add_done_callback(lambda done: done.cancelled() or done.exception())
        return self._pending

    def close(self) -> None:
        self.probe.dispose()


async def timed(check: Awaitable[None]) -> str:
    """The verdict of one check: ok, or why not, within the budget."""
    try:
        await asyncio.wait_for(check, READY_BUDGET)
    except TimeoutError:
        return f"no answer within {READY_BUDGET:g} s"
    except Exception as error:
        return f"{type(error).__name__}: {error}"[:300]
    return "ok"


def select_one(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


async def ping_redis(url: str) -> None:
    """PING the Redis server at ``url`` (with its credentials and database); raise unless it
    answers PONG."""
    connection = Connection(url, timeout=READY_BUDGET)
    try:
        answer = await connection.call(b"PING")
    except ReplyError as exc:
        raise ConnectionError(f"Redis answered PING with {exc}") from None
    finally:
        await connection.close()
    if answer != b"PONG":
        raise ConnectionError(f"Redis answered PING with {answer!r}")


Handler = Callable[[int, FrameType | None], object]


def drain_on_sigterm(health: Health, seconds: float) -> None:
    """On SIGTERM, drain for ``seconds`` before handing the signal to the server's own handler
    (uvicorn's, installed before the application starts); a second SIGTERM stops at once."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return
    stop: Handler = previous

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if health.draining:
            stop(signum, frame)
            return
        health.draining = True
        log.info("SIGTERM: draining for %g s, then stopping", seconds)
        timer = threading.Timer(seconds, stop, args=(signum, frame))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_sigterm)
