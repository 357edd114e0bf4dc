"""Benchmark the portal's pages on the embedded default (SQLite) with 100,000 usage rows.

    .venv/bin/python benchmarks/portal.py [--rows 100000] [--users 200] [--requests 30]
                                          [--models-per-user 20]

Seeds a throwaway workspace through the usage writer's own code (rows and usage totals, as the
server writes them), starts the gateway on one core, signs in as an admin and times each page
in sequence: as the client saw it, the page's own time on the server (its Server-Timing
header), which is what the bar of 150 ms is about, and the gateway's CPU time per request
(from /proc), which a machine loaded by other work inflates far less than either time. It
also times, in the same run, the heaviest page's aggregate read straight from the database and
the same answer computed by scanning the usage rows, which is what the totals spare every page
view. Prints markdown.
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session

from hepai_server.db.tables import StoredFile, VectorStore, VectorStoreFile
from hepai_server.gateway.ledger import UsageRow
from hepai_server.gateway.usage import add_to_budget_totals, add_to_daily_totals, insert_rows
from hepai_server.governance import budgets, groups, limits
from hepai_server.services import accounts
from procfs import cpu_seconds
from seqlatency import percentile
from services import Service, cli, free_port, prepare_workspace, start_gateway

#: The benchmark's largest knowledge base (seed_knowledge).
KNOWLEDGE_STORE = "vs_" + "0" * 32
PAGES = [
    ("/", "home"),
    ("/usage", "admin, every account, 30 days"),
    ("/usage?days=365", "admin, every account, 365 days"),
    ("/usage?view=people", "admin, top users and groups, 30 days"),
    ("/usage?days=365&view=people", "admin, top users and groups, 365 days"),
    ("/usage?user=user-7&days=90", "admin, one user, 90 days"),
    ("/usage?errors=1", "admin, every account, errors in the log"),
    ("/usage.csv?days=90", "CSV export, every account, 90 days"),
    ("/models", "models"),
    ("/playground", "playground"),
    ("/settings/keys", "API keys"),
    ("/admin/users", "users (first page of 200)"),
    ("/admin/users?q=user-1", "users, a search"),
    ("/admin/groups", "groups"),
    ("/admin/groups/g1", "one group"),
    ("/admin/models", "model permissions"),
    ("/admin/audit", "audit log"),
    ("/admin/prices", "prices"),
    ("/admin/budgets", "budgets and limits (first page of 206)"),
    ("/admin/budgets?q=user-1", "budgets and limits, a search"),
    ("/settings/limits", "limits & spend (own, group and key budgets)"),
    ("/groups", "my groups (an admin: every group)"),
    ("/groups/g1", "one group: members' budgets, limits, spend; its usage, 30 days"),
    ("/groups/g1/members/user-1", "a member's budget and limits"),
    ("/knowledge", "knowledge bases (20 stores)"),
    (f"/knowledge/{KNOWLEDGE_STORE}", "one knowledge base: 200 files, 100 more to pick from"),
    ("/admin/knowledge", "every owner's knowledge bases in sum"),
]


def seed(url: str, *, rows: int, users: int, models_per_user: int) -> dict[str, int]:
    """``users`` accounts and ``rows`` usage rows over 365 days, written as the server does."""
    engine = sa.create_engine(url)
    with Session(engine) as session:
        for n in range(users):
            accounts.create_user(session, username=f"user-{n}", password=None, groups=[f"g{n % 5}"])
        accounts.set_groups(session, user=accounts.get_user(session, "bench-admin"), groups=["g1"])
        session.commit()
        charged = budgets_for_everyone(session)
    with engine.connect() as connection:
        ids = [row[0] for row in connection.execute(sa.text("SELECT id FROM users"))]
    rng = random.Random(7)
    now = datetime.now(UTC)
    models = [f"provider-{n % 4}/model-{n}" for n in range(20)]
    habits = {user: rng.sample(models, models_per_user) for user in ids}
    batch: list[UsageRow] = []
    created: list[datetime] = []
    for n in range(rows):
        prompt, completion = rng.randint(10, 4000), rng.randint(1, 1000)
        user = rng.choice(ids)
        moment = now - timedelta(seconds=rng.uniform(0, 365 * 86400))
        batch.append(
            UsageRow(
                request_id=f"bench-{n}",
                user_id=user,
                api_key_id=None,
                endpoint="chat.completions",
                model=rng.choice(habits[user]),
                deployment=None,
                stream=rng.random() < 0.5,
                status_code=200 if rng.random() < 0.97 else 429,
                error=None,
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cached_tokens=None,
                reasoning_tokens=None,
                pages=None,
                bytes=None,
                usage_estimated=False,
                latency_ms=rng.uniform(100, 5000),
                ttft_ms=None,
                cost_nanos=(prompt * 2 + completion * 8) * 1000,
                budgets=charged.get(user),
                client_request_id=None,
                served_model=None,
                created_at=moment.timestamp(),
            )
        )
        created.append(moment)
        if len(batch) == 5000 or n == rows - 1:
            with engine.begin() as connection:  # as the usage writer writes a batch
                insert_rows(connection, batch, created)
                add_to_daily_totals(connection, batch, created)
                add_to_budget_totals(connection, batch, created, UTC)
            batch, created = [], []
    with engine.connect() as connection:
        # Those this version of the code has (a run on an earlier checkout, for comparison,
        # has only usage_daily).
        counted = {
            table: int(connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in ("usage_daily", "usage_model_daily", "usage_user_weekly")
            if sa.inspect(connection).has_table(table)
        }
    engine.dispose()
    return counted


def seed_knowledge(url: str) -> None:
    """The admin's 20 knowledge bases; the first holds 200 completed files of the admin's 300
    (the page lists them all and offers the rest). Rows only: the pages read no chunks."""
    engine = sa.create_engine(url)
    now = datetime.now(UTC)
    with Session(engine) as session:
        admin = accounts.get_user(session, "bench-admin")
        for n in range(20):
            session.add(
                VectorStore(
                    id=KNOWLEDGE_STORE if n == 0 else f"vs_{n:032x}",
                    user_id=admin.id,
                    name=f"store {n}",
                    embedding_model="hepai/bge-m3",
                    shared_groups=[],
                    shared_users=[],
                    created_at=now - timedelta(days=n),
                    last_active_at=now,
                )
            )
        for n in range(300):
            file_id = f"file-{n:032x}"
            session.add(
                StoredFile(
                    id=file_id,
                    user_id=admin.id,
                    filename=f"paper-{n}.pdf",
                    purpose="assistants",
                    bytes=1_000_000,
                    content_type="application/pdf",
                    sha256="0" * 64,
                    storage_key=f"{n:032x}",
                    created_at=now - timedelta(minutes=n),
                    expires_at=None,
                )
            )
            if n < 200:
                session.add(
                    VectorStoreFile(
                        store_id=KNOWLEDGE_STORE,
                        file_id=file_id,
                        user_id=admin.id,
                        status="completed",
                        stage="done",
                        max_chunk_tokens=800,
                        chunk_overlap_tokens=400,
                        chunks=40,
                        usage_bytes=60_000,
                        created_at=now - timedelta(minutes=n),
                        updated_at=now,
                    )
                )
        session.commit()
    engine.dispose()


def budgets_for_everyone(session: Session) -> dict[int, str]:
    """A monthly budget for every account and group, and rate limits for every group: what
    each account's rows are charged to (its budget and its group's)."""
    now = datetime.now(UTC)
    charged: dict[int, str] = {}
    for group in accounts.list_groups(session):
        own = budgets.set_budget(
            session,
            scope="group",
            subject_id=group.id,
            amount_nanos=1000 * 10**9,
            tokens=None,
            period="month",
            warn_at=0.8,
            now=now,
            by="bench",
        )
        limits.set_limit(
            session,
            scope="group",
            subject_id=group.id,
            model="",
            rpm=600,
            tpm=2_000_000,
            concurrency=None,
            now=now,
            by="bench",
        )
        for user in groups.members(session, group):
            mine = budgets.set_budget(
                session,
                scope="user",
                subject_id=user.id,
                amount_nanos=100 * 10**9,
                tokens=50_000_000,
                period="month",
                warn_at=0.8,
                now=now,
                by="bench",
            )
            charged[user.id] = f"{mine.id},{own.id}"
    session.commit()
    return charged


def timed(call: Callable[[], Any], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def timed_page(
    client: httpx.Client, path: str, repeat: int, gateway: Service
) -> tuple[list[float], list[float], float]:
    """Client-side times and the server's own (Server-Timing: app;dur=…) for one page, and the
    gateway's CPU time per request (from /proc: what a loaded machine does not inflate)."""
    seen, server = [], []
    cpu_before = sum(cpu_seconds(pid) for pid in gateway.pids())
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        seen.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        found = re.search(r"app;dur=([0-9.]+)", response.headers.get("server-timing", ""))
        if found:
            server.append(float(found.group(1)))
    cpu = sum(cpu_seconds(pid) for pid in gateway.pids()) - cpu_before
    return seen, server, cpu * 1000 / repeat


def direct_reads(url: str, repeat: int) -> list[tuple[str, list[float]]]:
    """The 365-day, every-account usage page's per-day-and-model read, from the per-model
    daily totals it reads, from the per-user daily totals it read before them, and the same
    answer from a scan of the usage rows."""
    engine = sa.create_engine(url)
    since = (datetime.now(UTC) - timedelta(days=364)).date()
    per_model = sa.text(
        "SELECT day, model, requests, total_tokens FROM usage_model_daily WHERE day >= :d"
    )
    totals = sa.text(
        "SELECT day, model, sum(requests), sum(total_tokens) FROM usage_daily "
        "WHERE day >= :d GROUP BY day, model"
    )
    scan = sa.text(
        "SELECT date(created_at), model, count(*), sum(total_tokens) FROM usage_records "
        "WHERE created_at >= :t GROUP BY date(created_at), model"
    )
    start = datetime.combine(since, datetime.min.time())
    with engine.connect() as connection:
        results: list[tuple[str, list[float]]] = []
        if sa.inspect(connection).has_table("usage_model_daily"):  # not on earlier checkouts
            results.append(
                (
                    "365 days, every account: the page's read of the per-model totals, direct",
                    timed(lambda: connection.execute(per_model, {"d": since}).all(), repeat),
                )
            )
        results += [
            (
                "the same answer from the per-user daily totals, direct",
                timed(lambda: connection.execute(totals, {"d": since}).all(), repeat),
            ),
            (
                "the same answer from a scan of the usage rows, direct",
                timed(lambda: connection.execute(scan, {"t": start}).all(), repeat),
            ),
        ]
    engine.dispose()
    return results


def row(
    label: str, samples: list[float], server: list[float] | None = None, cpu: float | None = None
) -> str:
    own = (
        f" {percentile(server, 50):.1f} | {percentile(server, 95):.1f} |" if server else " - | - |"
    )
    spent = f" {cpu:.1f} |" if cpu is not None else " - |"
    return (
        f"| {label} | {percentile(samples, 50):.1f} | {percentile(samples, 95):.1f} "
        f"| {max(samples):.1f} |{own}{spent}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument(
        "--models-per-user",
        type=int,
        default=20,
        help="models each user calls (20: every user every model, the worst case)",
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hepai-portal-bench-") as tmp:
        root = Path(tmp)
        ws = prepare_workspace(root, database_url=None)
        cli(["user", "create", "bench-admin", "--admin"], ws.env, root, stdin="bench-password\n")
        started = time.perf_counter()
        daily = seed(
            ws.database_url,
            rows=options.rows,
            users=options.users,
            models_per_user=options.models_per_user,
        )
        seed_knowledge(ws.database_url)
        seeded = time.perf_counter() - started
        port = free_port()
        gateway = start_gateway(ws, port=port, workers=1, cpus="0")
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=30) as client:
                form = client.get("/login").text
                token = re.search(r'name="csrf_token" value="([^"]+)"', form)
                assert token
                signed_in = client.post(
                    "/login",
                    data={
                        "csrf_token": token.group(1),
                        "username": "bench-admin",
                        "password": "bench-password",
                    },
                )
                assert signed_in.status_code == 303, signed_in.text[:300]
                results = []
                for path, label in PAGES:
                    client.get(path).raise_for_status()  # warm
                    seen, server, cpu = timed_page(client, path, options.requests, gateway)
                    results.append((f"`{path}` ({label})", seen, server, cpu))
            direct = direct_reads(ws.database_url, options.requests)
        finally:
            gateway.stop()
    print(
        f"{options.rows:,} usage rows over 365 days, {options.users} users, 20 models, "
        f"{options.models_per_user} models per user ("
        + ", ".join(f"{count:,} rows in {table}" for table, count in daily.items())
        + f"); seeded in {seeded:.0f} s. Gateway on one core (taskset 0), SQLite, one client "
        f"in sequence, {options.requests} requests per page after one warm-up; server CPU is "
        "the gateway's CPU time per request.\n"
    )
    print(
        "| page | p50 ms | p95 ms | max ms | server p50 ms | server p95 ms | server CPU ms |\n"
        "|---|---|---|---|---|---|---|"
    )
    for label, samples, server, cpu in results:
        print(row(label, samples, server, cpu))
    for label, samples in direct:
        print(row(label, samples))


if __name__ == "__main__":
    main()
