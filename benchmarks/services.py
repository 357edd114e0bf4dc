"""The processes under test: a workspace (data dir, user, key, providers file), the mock upstream
and the gateway, each started pinned to given cores and stopped on the way out."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from procfs import descendants

#: The public model id the benchmark calls, and the name the mock sees.
MODEL = "bench/chat"
UPSTREAM_MODEL = "chat-upstream"
UPSTREAM_KEY_ENV = "HEPAI_BENCH_UPSTREAM_KEY"
BIN = Path(sys.executable).parent
EXPERIMENTS = Path(__file__).resolve().parent / "experiments"


@dataclass(frozen=True, slots=True)
class Workspace:
    """Everything the gateway and the CLI read: a temp dir, the env pointing at it, a key."""

    root: Path
    env: dict[str, str]
    username: str
    api_key: str
    upstream_key: str
    mock_port: int
    database_url: str

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"


def free_port() -> int:
    """A port nothing listens on now (the OS picks it), on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def prepare_workspace(root: Path, *, database_url: str | None) -> Workspace:
    """Write the providers file and create a user and an API key with the real CLI."""
    mock_port = free_port()
    upstream_key = "sk-upstream-" + secrets.token_hex(8)
    providers = root / "providers.yaml"
    providers.write_text(
        "providers:\n"
        "  - name: mock\n"
        f"    base_url: http://127.0.0.1:{mock_port}/v1\n"
        f"    api_key_env: {UPSTREAM_KEY_ENV}\n"
        "    models:\n"
        f"      - id: {MODEL}\n"
        f"        upstream: {UPSTREAM_MODEL}\n"
    )
    # Settings read every HEPAI_SERVER_* variable: drop the caller's so they cannot leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEPAI_SERVER_")}
    env |= {
        "HEPAI_SERVER_DATA_DIR": str(root / "data"),
        "HEPAI_SERVER_CONFIG": str(providers),
        # uvicorn logs each worker's startup at info; wait_for_workers reads that line.
        "HEPAI_SERVER_LOG_LEVEL": "info",
        UPSTREAM_KEY_ENV: upstream_key,
    }
    if database_url:
        env["HEPAI_SERVER_DATABASE_URL"] = database_url
    (root / "logs").mkdir()
    # A unique name, so a shared PostgreSQL database can be reused run after run.
    username = "bench-" + secrets.token_hex(4)
    cli(["user", "create", username], env, root, stdin="bench-password\n")
    api_key = cli(["key", "create", "--user", username], env, root).strip()
    return Workspace(
        root=root,
        env=env,
        username=username,
        api_key=api_key,
        upstream_key=upstream_key,
        mock_port=mock_port,
        database_url=database_url or f"sqlite:///{root / 'data' / 'hepai.db'}",
    )


def cli(args: list[str], env: dict[str, str], cwd: Path, stdin: str = "") -> str:
    done = subprocess.run(
        [str(BIN / "hepai-server"), *args],
        input=stdin,
        env=env,
        cwd=cwd,  # no stray .env file in the caller's directory is read
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"hepai-server {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


class Service:
    """One process (and its children) started under ``taskset``, in a process group of its own.

    A group, not a session: the scheduler groups CPU shares by session (autogroup), and the
    servers must stay in the harness's, where ``--nice`` applies.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        ws: Workspace,
        cpus: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.cpus = cpus
        self.log_path = ws.log_dir / f"{name}.log"
        with self.log_path.open("ab") as log:
            # taskset execs the command, so the pid is the server's own.
            self.process = subprocess.Popen(
                ["taskset", "-c", cpus, *argv],
                env=env or ws.env,
                cwd=ws.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        """The process and all its descendants (uvicorn's workers, the resource tracker)."""
        return [self.pid, *descendants(self.pid)]

    def wait_ready(
        self, url: str, timeout: float = 30.0, headers: dict[str, str] | None = None
    ) -> None:
        """Poll ``url`` until it answers 200; fail early if the process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            try:
                request = urllib.request.Request(url, headers=headers or {})
                with urllib.request.urlopen(request, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s: {self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the gateway drains its usage rows), then SIGKILL to its own process group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        # Children left behind (a worker stuck in shutdown) are in the same process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(5)

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def start_mock(ws: Workspace, *, cpus: str) -> Service:
    argv = [
        str(BIN / "python"),
        "-m",
        "hepai_server.testing.mock_upstream",
        "--host",
        "127.0.0.1",
        "--port",
        str(ws.mock_port),
        "--api-key",
        ws.upstream_key,
    ]
    service = Service("mock", argv, ws=ws, cpus=cpus)
    ready_or_stop(
        service,
        lambda: service.wait_ready(
            f"http://127.0.0.1:{ws.mock_port}/v1/models",
            headers={"authorization": f"Bearer {ws.upstream_key}"},
        ),
    )
    return service


def start_gateway(
    ws: Workspace,
    *,
    port: int,
    workers: int,
    cpus: str,
    patches: list[str] | None = None,
    under: list[str] | None = None,
    timeout: float = 30.0,
) -> Service:
    """``patches``: modules of benchmarks/experiments/ to load into every gateway process;
    ``under``: a command the gateway runs under (valgrind), which starts its Python."""
    program = [str(BIN / "python"), "-m", "hepai_server"] if under else [str(BIN / "hepai-server")]
    argv = [
        *(under or ()),
        *program,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    env = _patched_env(ws, patches) if patches else None
    service = Service(f"gateway-w{workers}-cpu{cpus}", argv, ws=ws, cpus=cpus, env=env)

    def ready() -> None:
        service.wait_ready(f"http://127.0.0.1:{port}/healthz", timeout)
        wait_for_workers(service, workers, timeout)

    ready_or_stop(service, ready)
    return service


def _patched_env(ws: Workspace, patches: list[str]) -> dict[str, str]:
    """An env whose PYTHONPATH holds a sitecustomize.py importing each patch module.

    Python imports sitecustomize at startup in every process given this env (uvicorn's spawned
    workers too), and in no other: the mock and the CLI run unpatched.
    """
    site = ws.root / "patches"
    site.mkdir(exist_ok=True)
    lines = [f"import sys\nsys.path.insert(0, {str(EXPERIMENTS)!r})\n"]
    lines += [f"import {name}  # noqa: F401\n" for name in patches]
    (site / "sitecustomize.py").write_text("".join(lines))
    out = EXPERIMENTS.parent / "profiles"  # where the diagnostic patches write (git-ignored)
    out.mkdir(exist_ok=True)
    path = os.pathsep.join(filter(None, [str(site), ws.env.get("PYTHONPATH")]))
    return ws.env | {"PYTHONPATH": path, "HEPAI_BENCH_OUT": str(out)}


def ready_or_stop(service: Service, ready: Callable[[], None]) -> None:
    """Wait for the service; one that never gets ready is stopped, not left running."""
    try:
        ready()
    except BaseException:
        service.stop()
        raise


def wait_for_workers(service: Service, workers: int, timeout: float = 30.0) -> None:
    """/healthz answers once one worker is up; wait until every one has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = service.log_path.read_text(errors="replace").count("Application startup complete")
        if started >= workers:
            return
        time.sleep(0.1)
    raise RuntimeError(f"only some of {workers} workers started: {service.log_tail()}")


def script_stats(redis: Redis) -> tuple[int, int]:
    """Redis's count of script calls (``EVALSHA``: the limit counters') so far, and the
    microseconds of its own CPU they took."""
    stats = redis.info("commandstats").get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(stats["calls"]), int(stats["usec"])
