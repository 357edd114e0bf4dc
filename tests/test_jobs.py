"""The job runner: in process, and on procrastinate in PostgreSQL, where a replica killed
mid-job has its job finished by another."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hepai_server.config import Settings
from hepai_server.jobs.local import LocalRunner
from hepai_server.jobs.postgres import PostgresRunner
from hepai_server.jobs.runner import Job, libpq_url, open_runner
from tests.conftest import POSTGRES_ADMIN_URL

ROOT = Path(__file__).parent.parent


def test_the_settings_choose_the_runner(tmp_path: Path) -> None:
    assert isinstance(open_runner(Settings(data_dir=tmp_path)), LocalRunner)
    postgres = Settings(data_dir=tmp_path, database_url="postgresql://u@127.0.0.1/db")
    assert isinstance(open_runner(postgres), PostgresRunner)
    local = Settings(data_dir=tmp_path, database_url="postgresql://u@h/db", job_queue="in-process")
    assert isinstance(open_runner(local), LocalRunner)
    with pytest.raises(ValueError, match="PostgreSQL"):
        open_runner(Settings(data_dir=tmp_path, job_queue="procrastinate"))
    assert libpq_url("postgresql+psycopg://u@h:5/db") == "postgresql://u@h:5/db"


def test_a_key_runs_once_at_a_time_and_unfinished_jobs_are_found_at_start() -> None:
    ran: list[str] = []
    release = asyncio.Event()

    async def handler(payload: dict[str, Any]) -> None:
        ran.append(payload["name"])
        if payload["name"] == "broken":
            raise RuntimeError("a failing job does not stop the runner")
        await release.wait()

    async def pending() -> list[Job]:
        return [Job("test", "left-over", {"name": "left-over"})]

    async def scenario() -> None:
        runner = LocalRunner(concurrency=4, recovery_seconds=3600)
        runner.register("test", handler, pending)
        await runner.start()
        for _ in range(3):
            await runner.submit(Job("test", "a", {"name": "a"}))
        await runner.submit(Job("test", "broken", {"name": "broken"}))
        await asyncio.sleep(0.05)
        release.set()
        await runner.idle()
        await runner.submit(Job("test", "a", {"name": "a"}))  # finished: runs again
        await runner.idle()
        await runner.close()
        with pytest.raises(LookupError):
            await runner.submit(Job("unknown", "x", {}))

    asyncio.run(scenario())
    assert sorted(ran) == ["a", "a", "broken", "left-over"]


#: A replica: a runner whose job records that it started, then never ends.
REPLICA = textwrap.dedent(
    """
    import asyncio, sys
    import psycopg
    from hepai_server.jobs.postgres import PostgresRunner
    from hepai_server.jobs.runner import Job

    url = sys.argv[1]

    async def handler(payload):
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("INSERT INTO job_log (name, step) VALUES (%s, 'started')", (payload["name"],))
        await asyncio.Event().wait()

    async def nothing():
        return []

    async def main():
        runner = PostgresRunner(conninfo=url, concurrency=1, recovery_seconds=3600,
                                heartbeat_seconds=0.5, stalled_seconds=2)
        runner.register("test.job", handler, nothing)
        await runner.start()
        await runner.submit(Job("test.job", "k1", {"name": "k1"}))
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


@pytest.fixture
def job_database(postgres_url: str) -> Iterator[str]:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS job_log")
        connection.execute("CREATE TABLE job_log (name TEXT, step TEXT)")
    yield postgres_url


def log_of(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url, autocommit=True) as connection:
        return [tuple(row) for row in connection.execute("SELECT name, step FROM job_log")]


@pytest.mark.postgres
def test_a_job_of_a_killed_replica_is_finished_by_another(job_database: str) -> None:
    replica = subprocess.Popen([sys.executable, "-c", REPLICA, job_database], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while ("k1", "started") not in log_of(job_database):
            assert time.monotonic() < deadline and replica.poll() is None
            time.sleep(0.1)
    finally:
        replica.kill()  # SIGKILL: no goodbye, the job stays "doing"
        replica.wait()

    release = asyncio.Event()

    async def handler(payload: dict[str, Any]) -> None:
        with psycopg.connect(job_database, autocommit=True) as connection:
            connection.execute("INSERT INTO job_log VALUES (%s, 'started')", (payload["name"],))
        if payload["name"] == "k2":
            await release.wait()
        with psycopg.connect(job_database, autocommit=True) as connection:
            connection.execute("INSERT INTO job_log VALUES (%s, 'finished')", (payload["name"],))

    async def scenario() -> None:
        runner = PostgresRunner(
            conninfo=job_database,
            concurrency=1,
            recovery_seconds=0.5,
            heartbeat_seconds=0.5,
            stalled_seconds=2,
        )

        async def nothing() -> list[Job]:
            return []

        runner.register("test.job", handler, nothing)
        await runner.start()
        try:
            deadline = time.monotonic() + 60
            while ("k1", "finished") not in log_of(job_database):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            # A second submit of a running key, or of a waiting one (k3, behind k2 on the one
            # slot), adds nothing: each runs once.
            await runner.submit(Job("test.job", "k2", {"name": "k2"}))
            while ("k2", "started") not in log_of(job_database):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            for key in ("k2", "k3", "k3"):
                await runner.submit(Job("test.job", key, {"name": key}))
            release.set()
            while ("k3", "finished") not in log_of(job_database):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            await asyncio.sleep(1)
        finally:
            await runner.close()

    asyncio.run(scenario())
    log = log_of(job_database)
    assert log.count(("k1", "finished")) == 1
    assert log.count(("k2", "finished")) == 1
    assert log.count(("k3", "finished")) == 1


@pytest.mark.postgres
def test_replicas_starting_together_on_a_new_database_create_the_queue_once() -> None:
    """The first start of several replicas at once: one creates procrastinate's tables, the
    others wait for it and use them (none fails for finding them half-way)."""
    name = f"hepai_jobs_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"

    async def nothing() -> list[Job]:
        return []

    async def handler(payload: dict[str, Any]) -> None:
        return None

    async def scenario() -> None:
        runners = [
            PostgresRunner(conninfo=url, concurrency=1, recovery_seconds=60) for _ in range(4)
        ]
        for runner in runners:
            runner.register("test.job", handler, nothing)
        try:
            await asyncio.gather(*(runner.start() for runner in runners))
        finally:
            await asyncio.gather(*(runner.close() for runner in runners))

    try:
        asyncio.run(scenario())
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
