"""`hepai-server worker run` without --port: each worker takes a free port, says so in its
registration, and two of them on one machine no longer collide."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.stack import BIN, Platform, Server, stop

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, providers_file: Path) -> Platform:
    """SQLite is enough: ports do not depend on the database."""
    platform = Platform(
        data_dir=tmp_path_factory.mktemp("ports"), database_url=None, config=providers_file
    )
    platform.cli("db", "upgrade")
    return platform


@pytest.fixture(scope="module")
def server(platform: Platform) -> Iterator[Server]:
    with platform.serve() as running:
        yield running


@contextmanager
def worker_without_port(
    server: Server, key: str, name: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                str(BIN / "hepai-server"),
                "worker",
                "run",
                "tests/workers/ours.py:Calculator",
                "--controller",
                server.url,
            ],
            env={
                **os.environ,
                "HEPAI_API_KEY": key,
                "TEST_WORKER_NAME": name,
                "TEST_WORKER_PERMISSION": "groups: all",
            },
            cwd=Path(__file__).parent.parent,
            stderr=sink,
        )
    try:
        yield process
    finally:
        stop(process)


def registered(server: Server, key: str, name: str, timeout: float = 60) -> dict[str, object]:
    """The worker serving ``name``, once it has registered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(server.base_url + "/worker/list_workers", headers={"x-api-key": key})
        for worker in answer.json()["data"]:
            models = [model["model_name"] for model in worker["resource_info"]]
            if name in models:
                return dict(worker)
        time.sleep(0.1)
    raise AssertionError(f"no worker of {name} registered")


def test_two_workers_without_a_port_each_take_a_free_one(
    platform: Platform, server: Server, unique, tmp_path: Path
) -> None:
    owner = unique("ports")
    key = platform.create_user(owner)
    names = [f"{owner}/first", f"{owner}/second"]
    with ExitStack() as stack:
        processes = [
            stack.enter_context(worker_without_port(server, key, n, tmp_path / f"{i}.log"))
            for i, n in enumerate(names)
        ]
        workers = [registered(server, key, name) for name in names]
        ports = [worker["network_info"]["port"] for worker in workers]  # type: ignore[index]
        assert len(set(ports)) == 2 and 0 not in ports
        assert all(process.poll() is None for process in processes)
        for name in names:
            assert server.hepai(key).get_remote_model(name).add(1, b=2) == 3
        # Registered only once it listened: its own status route answers on that port.
        for port in ports:
            status = httpx.get(f"http://127.0.0.1:{port}/apiv2/worker/get_status")
            assert status.status_code == 200


def test_worker_run_says_it_loads_and_how_long_it_took(
    platform: Platform, server: Server, unique, tmp_path: Path
) -> None:
    owner = unique("progress")
    key = platform.create_user(owner)
    with worker_without_port(server, key, f"{owner}/calc", tmp_path / "worker.log"):
        registered(server, key, f"{owner}/calc")
    log = (tmp_path / "worker.log").read_text()
    assert "loading tests/workers/ours.py:Calculator ..." in log
    assert "tests/workers/ours.py:Calculator loaded in" in log
