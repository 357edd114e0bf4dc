"""Deadlines on database connections: a connection silent past its deadline is cut.

PostgreSQL's ``statement_timeout`` only helps while the server runs: a hung server, or a
network that swallows packets, leaves the thread that waits on the socket waiting forever, and
its pooled connection with it, so the pool starves and every call that needs the database
hangs. Each connection is armed when it is about to talk to the server (a statement, a ping, a
commit, the rollback that returns it to the pool) and disarmed when the server has answered;
one thread per engine cuts the connections whose deadline passed: a PostgreSQL socket is shut
down (the waiting driver then raises, and SQLAlchemy replaces the connection), a SQLite
statement is interrupted.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: How often the watch looks at the deadlines: a cut comes at most this late.
TICK = 0.2


def abort_postgresql(connection: Any) -> None:
    """Shut down the socket under a psycopg connection: a read blocked on it returns at once."""
    descriptor = os.dup(connection.pgconn.socket)
    with socket.socket(fileno=descriptor) as sock:
        sock.shutdown(socket.SHUT_RDWR)


def abort_sqlite(connection: Any) -> None:
    connection.interrupt()


class Deadlines:
    """The connections of one engine that are waiting on the server, and until when."""

    def __init__(self, seconds: float, abort: Callable[[Any], None]) -> None:
        self._seconds = seconds
        self._abort = abort
        self._armed: dict[int, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self, connection: Any) -> None:
        """``connection`` is about to wait on the server: cut it if it waits too long."""
        self._armed[id(connection)] = (time.monotonic() + self._seconds, connection)
        if self._thread is None:
            self._start()

    def disarm(self, connection: Any) -> None:
        self._armed.pop(id(connection), None)

    def stop(self) -> None:
        self._stopped.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="db-deadlines", daemon=True
                )
                self._thread.start()

    def _watch(self) -> None:
        while not self._stopped.wait(TICK):
            now = time.monotonic()
            for key in [key for key, (deadline, _) in self._armed.items() if deadline <= now]:
                current = self._armed.pop(key, None)
                if current is None:
                    continue  # answered meanwhile
                deadline, connection = current
                if deadline > now:  # armed again meanwhile, for a later statement
                    self._armed.setdefault(key, current)
                    continue
                log.warning(
                    "a database connection was silent for %.0f s; cutting it", self._seconds
                )
                try:
                    self._abort(connection)
                except Exception:
                    log.warning("cutting a silent database connection failed", exc_info=True)
