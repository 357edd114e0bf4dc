"""A running platform for end-to-end tests: mock upstreams and a real `hepai-server serve`
process, each a real process on loopback, with the CLI and the database within reach."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import sqlalchemy as sa
from hepai import HepAI

BIN = Path(sys.executable).parent
UPSTREAM_KEY = "upstream-secret-key-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    # Generous: it returns as soon as the process answers, or at once when it dies; only a
    # loaded CI machine (two test processes, each starting servers) ever waits long.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up")


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@dataclass
class MockProcess:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(self.url + "/_mock/requests").json())

    def events(self) -> list[dict[str, Any]]:
        return list(httpx.get(self.url + "/_mock/events").json())

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r["body"].get("model") == model]


@contextmanager
def mock_upstream(*args: str) -> Iterator[MockProcess]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hepai_server.testing.mock_upstream", "--port", str(port), *args]
    )
    mock = MockProcess(port, process)
    try:
        wait_until_up(mock.url + "/_mock/events", process)
        yield mock
    finally:
        stop(process)


@dataclass
class Platform:
    """The configuration every gateway process of one test database shares."""

    data_dir: Path
    database_url: str | None
    config: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {
            key: value for key, value in os.environ.items() if not key.startswith("HEPAI_SERVER_")
        }
        env.update(
            HEPAI_SERVER_DATA_DIR=str(self.data_dir),
            HEPAI_SERVER_CONFIG=str(self.config),
            HEPAI_SERVER_USAGE_FLUSH_SECONDS="0.05",
            MOCK_KEY=UPSTREAM_KEY,
            WRONG_KEY="not-the-upstream-key",
            **self.extra_env,
        )
        env.pop("HEPAI_API_KEY", None)
        if self.database_url:
            env["HEPAI_SERVER_DATABASE_URL"] = self.database_url
        return env

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
        return f"sqlite:///{self.data_dir / 'hepai.db'}"

    def cli(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "hepai-server"), *args],
            env=self.env,
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"hepai-server {' '.join(args)} failed:\n{result.stderr}")
        return result

    def command(self, *args: str, input: str = "") -> str:
        """The CLI's own code run in this process, for the accounts and keys tests need: what
        `cli` does, without a Python start-up per call (test_cli runs it as scripts do)."""
        from click.testing import CliRunner

        from hepai_server.cli.main import cli

        unset: dict[str, str | None] = dict.fromkeys(
            (key for key in os.environ if key.startswith("HEPAI_SERVER_")), None
        )
        result = CliRunner().invoke(
            cli, list(args), input=input, env={**unset, **self.env}, catch_exceptions=False
        )
        if result.exit_code != 0:
            raise AssertionError(f"hepai-server {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def create_user(self, name: str, *options: str) -> str:
        """Create a user (password ``a-password``) and return a fresh API key for it."""
        self.command("user", "create", name, *options, input="a-password\n")
        return self.create_key(name)

    def create_key(self, user: str, *options: str) -> str:
        return self.command("key", "create", "--user", user, *options).strip()

    def key_id(self, key: str) -> int:
        prefix = key[:10]
        for line in self.command("key", "list").splitlines():
            columns = line.split("\t")
            if columns[1] == prefix + "…":
                return int(columns[0])
        raise LookupError(prefix)

    @contextmanager
    def serve(self, *args: str, env: Mapping[str, str] | None = None) -> Iterator[Server]:
        port = free_port()
        log = self.data_dir / f"serve-{port}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [str(BIN / "hepai-server"), "serve", "--port", str(port), *args],
                env={**self.env, **(env or {})},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        server = Server(port, process, log)
        try:
            wait_until_up(server.url + "/healthz", process)
            yield server
        finally:
            server.clients.close()
            stop(process)

    def usage_rows(self, request_id: str, *, timeout: float = 10) -> list[dict[str, Any]]:
        """The usage rows of one request, waiting for the batch writer."""
        engine = sa.create_engine(self.sqlalchemy_url)
        deadline = time.monotonic() + timeout
        try:
            while True:
                with engine.connect() as connection:
                    # The platform's own id, or the one the client sent in X-Request-ID.
                    rows = connection.execute(
                        sa.text(
                            "SELECT * FROM usage_records "
                            "WHERE request_id = :r OR client_request_id = :r"
                        ),
                        {"r": request_id},
                    )
                    found = [dict(row._mapping) for row in rows]
                if found or time.monotonic() > deadline:
                    return found
                time.sleep(0.05)
        finally:
            engine.dispose()

    def usage_row(self, request_id: str) -> dict[str, Any]:
        rows = self.usage_rows(request_id)
        assert len(rows) == 1, rows
        return rows[0]


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    #: Clients the tests made for this server, closed when it stops (no socket is left to GC).
    clients: ExitStack = field(default_factory=ExitStack)

    def openai(self, key: str, *, prefix: str = "/apiv2", **options: Any) -> openai.OpenAI:
        client = openai.OpenAI(base_url=self.url + prefix, api_key=key, max_retries=0, **options)
        return self.clients.enter_context(client)

    def hepai(self, key: str | None = None) -> HepAI:
        """The hepai client; without ``key`` it reads HEPAI_API_KEY as users' scripts do."""
        options = {"api_key": key} if key is not None else {}
        return self.clients.enter_context(HepAI(base_url=self.base_url, **options))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/apiv2"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def hepai_worker(
    server: Server,
    key: str,
    name: str,
    permissions: str = "",
    *,
    worker_id: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker of the hepai SDK (tests/workers/hepai_calculator.py) registered with ``server``
    under ``key``'s owner; stopped with SIGTERM, which makes it deregister."""
    port = free_port()
    args = [str(port), server.url, name, permissions] + ([worker_id] if worker_id else [])
    env = {**os.environ, "HEPAI_API_KEY": key}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.workers.hepai_calculator", *args],
        env=env,
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/apiv2/worker/get_status", process)
        yield process
    finally:
        stop(process)


@contextmanager
def our_worker(
    server: Server, key: str, name: str, permission: str = "", *, heartbeat: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """tests/workers/ours.py served by `hepai-server worker run`, registered with ``server``."""
    env = {"TEST_WORKER_NAME": name, "TEST_WORKER_PERMISSION": permission}
    with run_worker(
        server, key, "tests/workers/ours.py:Calculator", env=env, heartbeat=heartbeat
    ) as process:
        yield process


@contextmanager
def run_worker(
    server: Server,
    key: str,
    spec: str,
    *,
    env: Mapping[str, str] | None = None,
    heartbeat: float = 60,
    timeout: float = 90,
    port: int | None = None,
    host: str = "127.0.0.1",
    args: Sequence[str] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """`hepai-server worker run SPEC`, registered with ``server`` under ``key``'s owner and
    listening on ``host``.

    Task journals go to a directory of the test's unless ``env`` names one."""
    port = port or free_port()
    with tempfile.TemporaryDirectory(prefix="hepai-worker-") as scratch:
        process = subprocess.Popen(
            [
                str(BIN / "hepai-server"),
                "worker",
                "run",
                spec,
                "--controller",
                server.url,
                "--port",
                str(port),
                "--heartbeat",
                str(heartbeat),
                "--host",
                host,
                *args,
            ],
            env={
                **os.environ,
                "HEPAI_API_KEY": key,
                "HEPAI_SERVER_TASK_DIR": scratch,
                **(env or {}),
            },
            cwd=Path(__file__).parent.parent,
        )
        try:
            wait_until_up(f"http://{host}:{port}/apiv2/worker/get_status", process, timeout)
            yield process
        finally:
            stop(process)


def follow(tool: Any, task_id: str, *, until: Callable[[dict[str, Any]], bool]) -> list[Any]:
    """Every status of a task of the task protocol (a remote model's ``status``), polled
    closely, up to the first that ``until`` accepts."""
    seen, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline:
        seen.append(tool.status(task_id))
        if until(seen[-1]):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} never got there: {seen[-1]}")


def finished(status: dict[str, Any]) -> bool:
    return status["status"] in ("succeeded", "failed", "cancelled")
