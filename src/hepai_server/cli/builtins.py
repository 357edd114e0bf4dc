"""Built-in workers started beside `hepai-server serve --builtin NAME`: the embedded default.

They run as the service account ``hepai-builtin`` (an admin, so the built-in model names are
its own) with a key made at each start; the previous start's key is revoked first. They run
below the gateway's CPU priority (``HEPAI_SERVER_BUILTIN_NICENESS``), so a document converting
beside it does not slow its answers to everyone else (benchmarks/RESULTS.md). They are
started once the gateway answers, and stopped when it stops, however it stops: uvicorn ends
the process by re-raising the signal it caught, so the kernel is asked to send each worker
SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG), and that thread lives as
long as the server.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import partial

from hepai_server.cli.context import database
from hepai_server.config import Settings
from hepai_server.db.tables import User
from hepai_server.errors import NotFound
from hepai_server.services import accounts

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
ACCOUNT = "hepai-builtin"
KEY_NAME = "builtin-workers"


def service_key() -> str:
    """A fresh key of the service account (created on first use); older ones are revoked."""
    with database(changes_callers=True) as session:
        try:
            user: User = accounts.get_user(session, ACCOUNT)
        except NotFound:
            user = accounts.create_user(session, username=ACCOUNT, password=None, level="admin")
        for old in accounts.list_api_keys(session, user=user):
            if old.name == KEY_NAME and old.revoked_at is None:
                accounts.revoke_api_key(session, key_id=old.id)
        _row, secret = accounts.create_api_key(
            session, user=user, name=KEY_NAME, expires_in=timedelta(days=365)
        )
    return secret


@contextmanager
def builtin_workers(names: list[str], *, gateway_port: int) -> Iterator[None]:
    """Start the named workers once the gateway on ``gateway_port`` is up; stop them after."""
    if not names:
        yield
        return
    key = service_key()
    niceness = Settings().builtin_niceness
    processes: list[subprocess.Popen[bytes]] = []
    stopping = threading.Event()
    controller = f"http://127.0.0.1:{gateway_port}"

    def launch() -> None:
        deadline = time.monotonic() + 120
        while not stopping.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(controller + "/healthz", timeout=1).close()
                break
            time.sleep(0.2)
        for name in names:
            if stopping.is_set():
                return
            command = [
                sys.executable,
                "-m",
                "hepai_server",
                "worker",
                "run",
                f"builtin:{name}",
                "--controller",
                controller,
                "--worker-id",
                builtin_worker_id(name, gateway_port),
            ]
            env = {**os.environ, "HEPAI_API_KEY": key}
            processes.append(
                subprocess.Popen(command, env=env, preexec_fn=partial(_as_builtin, niceness))
            )
            log.info("started the built-in worker %s", name)
        stopping.wait()  # the workers' lifeline: they are signalled when this thread ends

    starter = threading.Thread(target=launch, name="builtin-workers", daemon=True)
    starter.start()
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        stopping.set()
        starter.join(timeout=5)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def builtin_worker_id(name: str, gateway_port: int) -> str:
    """The same on every start of this server, though the worker's port is new each time:
    the worker's state on disk (hepai/mineru's task journal) is kept under its id."""
    origin = f"{socket.gethostname()}:{gateway_port}:builtin:{name}"
    return "wk-" + uuid.uuid5(uuid.NAMESPACE_URL, origin).hex[:12]


def _as_builtin(niceness: int) -> None:
    """In the child, before exec: SIGTERM when the thread that started it ends, and a lower
    CPU priority than the gateway's."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    os.nice(niceness)
