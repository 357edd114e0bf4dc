"""deploy/compose.yaml without Docker: the same services, started on this machine.

Two gateway replicas on one PostgreSQL database, Redis, SeaweedFS for files, the built-in
workers and nginx in front, each started with the command its container runs (deploy/bin/*,
the nginx template of deploy/nginx), every one on a free loopback port. The e2e test
(tests/test_topology.py) and the soak benchmark use it; run it by hand with

    scripts/topology.sh [--builtin NAME ...]    # prints the URL and a key, stops on Ctrl-C
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import httpx
import psycopg

from tests.s3store import seaweedfs
from tests.stack import BIN, free_port, mock_upstream, stop

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
POSTGRES_ADMIN_URL = os.environ.get(
    "HEPAI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
#: nginx's main configuration around the template: what the Docker image's nginx.conf holds,
#: with every path in the work directory, so it runs without touching the system's nginx.
NGINX_MAIN = """
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/hepai.conf;
}}
"""


@dataclass
class Replica:
    port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"


@dataclass
class Topology:
    workdir: Path
    env: dict[str, str]
    replicas: list[Replica]
    nginx_port: int
    key: str
    nginx: subprocess.Popen[bytes] | None = None
    #: Replicas nginx is told to send nothing (`down`).
    down: set[int] = field(default_factory=set)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"

    @property
    def base_url(self) -> str:
        return self.url + "/apiv2"

    # --- the replicas -----------------------------------------------------------------------
    def start_replica(self, index: int) -> None:
        self.launch_replica(index)
        self.wait_replica(index)

    def wait_replica(self, index: int) -> None:
        replica = self.replicas[index]
        assert replica.process is not None
        wait_for(f"{replica.url}/health/ready", replica.process, timeout=60)

    def launch_replica(self, index: int) -> None:
        replica = self.replicas[index]
        env = {
            **self.env,
            "HEPAI_SERVER_DATA_DIR": str(replica.data_dir),
            "PORT": str(replica.port),
            "HOST": "127.0.0.1",
            "WORKERS": self.env.get("WORKERS", "1"),
        }
        with replica.log.open("ab") as sink:
            replica.process = subprocess.Popen(
                [str(DEPLOY / "bin" / "gateway")], env=env, stdout=sink, stderr=subprocess.STDOUT
            )

    def stop_replica(self, index: int) -> int:
        """SIGTERM: the replica drains, finishes what it serves, and exits."""
        process = self.replicas[index].process
        assert process is not None
        return stop(process, timeout=60)

    def take_out(self, index: int) -> None:
        """Mark a replica `down` in nginx and reload it: new requests go to the others."""
        self.down.add(index)
        self.write_nginx_config()
        self.reload_nginx()

    def put_back(self, index: int) -> None:
        self.down.discard(index)
        self.write_nginx_config()
        self.reload_nginx()

    # --- nginx -----------------------------------------------------------------------------
    def write_nginx_config(self) -> None:
        prefix = self.workdir / "nginx"
        addresses = {
            f"GATEWAY_{number}": replica.address + (" down" if number - 1 in self.down else "")
            for number, replica in enumerate(self.replicas, 1)
        }
        template = Template((DEPLOY / "nginx" / "hepai.conf.template").read_text())
        server = template.safe_substitute(LISTEN=f"127.0.0.1:{self.nginx_port}", **addresses)
        (prefix / "hepai.conf").write_text(server)
        (prefix / "nginx.conf").write_text(NGINX_MAIN.format(prefix=prefix))

    def start_nginx(self) -> None:
        prefix = self.workdir / "nginx"
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / name).mkdir(parents=True, exist_ok=True)
            # nginx's workers run as nobody when it is started as root.
            (prefix / name).chmod(0o777)
        self.write_nginx_config()
        command = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g"]
        check = subprocess.run([*command, "daemon off;", "-t"], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx refused its configuration:\n{check.stderr}")
        self.nginx = subprocess.Popen(
            [*command, "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(self.url + "/health/live", self.nginx, timeout=20)

    def reload_nginx(self) -> None:
        assert self.nginx is not None
        self.nginx.send_signal(signal.SIGHUP)
        # The old workers finish their requests; new ones read the new configuration.
        time.sleep(0.5)

    # --- everything else ---------------------------------------------------------------------
    def run(self, *command: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            list(command),
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")
        return result.stdout

    def start(self, command: Sequence[str], log: str, env: dict[str, str]) -> None:
        with (self.workdir / log).open("ab") as sink:
            process = subprocess.Popen(
                list(command), env={**self.env, **env}, stdout=sink, stderr=subprocess.STDOUT
            )
        self.processes.append(process)


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


def wait_for_models(topology: Topology, names: Sequence[str], timeout: float = 120) -> None:
    """Until /models through nginx lists every one of ``names`` (workers register late)."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        answer = httpx.get(
            topology.base_url + "/models",
            headers={"authorization": f"Bearer {topology.key}"},
            timeout=10,
        )
        if answer.status_code == 200:
            seen = {row["id"] for row in answer.json()["data"]}
            if set(names) <= seen:
                return
        time.sleep(0.3)
    raise TimeoutError(f"models {sorted(set(names) - seen)} never appeared")


def create_user(url: str, admin_key: str, name: str = "alice") -> str:
    """A user and a key of theirs, made with an admin's key through the account API (the
    hepai client's), which spares two CLI processes."""
    headers = {"authorization": f"Bearer {admin_key.strip()}"}
    user = httpx.post(
        url + "/apiv2/user/create_user",
        json={"username": name, "password": secrets.token_urlsafe(12)},
        headers=headers,
        timeout=30,
    )
    user.raise_for_status()
    key = httpx.post(
        url + "/apiv2/key/create_api_key",
        json={"user_id": int(user.json()["id"]), "key_name": "guide"},
        headers=headers,
        timeout=30,
    )
    key.raise_for_status()
    return str(key.json()["api_key"])


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"hepai_topology_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
            ).stdout.strip()
            != "PONG"
        ):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


@contextmanager
def topology(
    builtins: Sequence[str] = ("markitdown",), *, workers_per_replica: int = 1
) -> Iterator[Topology]:
    """The compose topology on loopback, torn down afterwards however the block ends."""
    workdir = Path(tempfile.mkdtemp(prefix="hepai-topology-"))
    workdir.chmod(0o755)  # nginx's workers (nobody, under root) read below it
    with ExitStack() as stack:
        database_url = stack.enter_context(postgres_database())
        redis_url = stack.enter_context(redis_server(workdir))
        store = stack.enter_context(seaweedfs())
        mock = stack.enter_context(mock_upstream())
        providers = workdir / "providers.yaml"
        template = (ROOT / "examples" / "demo-providers.yaml").read_text()
        providers.write_text(template.replace("{DEMO_PORT}", str(mock.port)))
        nginx_port = free_port()
        env = {
            key: value for key, value in os.environ.items() if not key.startswith("HEPAI_SERVER_")
        }
        env.pop("HEPAI_API_KEY", None)
        env.update(
            PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
            HEPAI_SERVER_DATABASE_URL=database_url,
            HEPAI_SERVER_CONFIG=str(providers),
            HEPAI_SERVER_DATA_DIR=str(workdir / "cli"),
            HEPAI_SERVER_SECRET_KEY=secrets.token_urlsafe(32),
            HEPAI_SERVER_REDIS_URL=redis_url,
            HEPAI_SERVER_PUBLIC_URL=f"http://127.0.0.1:{nginx_port}",
            HEPAI_SERVER_DRAIN_SECONDS="1",
            HEPAI_SERVER_USAGE_FLUSH_SECONDS="0.2",
            WORKERS=str(workers_per_replica),
            **store.env("hepai-files"),
        )
        replicas = [
            Replica(free_port(), workdir / f"replica-{n}", workdir / f"replica-{n}.log")
            for n in (1, 2)
        ]
        place = Topology(workdir, env, replicas, nginx_port, key="")
        place.run(str(DEPLOY / "bin" / "migrate"))
        try:
            for index in range(len(replicas)):
                place.launch_replica(index)
            # While the replicas start: the workers' key, as an operator would make it.
            place.run(str(DEPLOY / "bin" / "builtin-key"), str(workdir / "builtin.key"))
            for index in range(len(replicas)):
                place.wait_replica(index)
            place.key = create_user(replicas[0].url, (workdir / "builtin.key").read_text())
            place.start_nginx()
            for name in builtins:
                place.start(
                    [str(DEPLOY / "bin" / "builtin-worker"), name],
                    f"builtin-{name}.log",
                    {
                        "CONTROLLER": place.url,
                        "HEPAI_API_KEY_FILE": str(workdir / "builtin.key"),
                        "HOST": "127.0.0.1",
                        "WORKER_ID": f"wk-topology-{name}",
                        "HEPAI_SERVER_DATA_DIR": str(workdir / f"builtin-{name}"),
                    },
                )
            yield place
        finally:
            for process in place.processes:
                stop(process)
            for replica in replicas:
                if replica.process is not None:
                    stop(replica.process)
            if place.nginx is not None:
                stop(place.nginx)
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--builtin",
        action="append",
        default=None,
        help="a built-in worker to run (repeatable; default: markitdown)",
    )
    options = parser.parse_args()
    with topology(options.builtin or ["markitdown"]) as place:
        print(f"nginx:   {place.base_url}", file=sys.stderr)
        for number, replica in enumerate(place.replicas, 1):
            print(f"replica {number}: {replica.url}  (log {replica.log})", file=sys.stderr)
        print(f"API key: {place.key}  (user alice)", file=sys.stderr)
        print("Ctrl-C stops everything.", file=sys.stderr)
        with suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
