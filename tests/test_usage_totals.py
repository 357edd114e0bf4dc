"""The usage totals kept beside the ledger's rows (per day, user and model; per day and model;
per week and user) stay the rows' sums whoever writes them and however many at once, the usage
reports read from them say what the rows add up to, and `usage verify` finds any that do not."""

from __future__ import annotations

import random
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from hepai_server.db import migrate
from hepai_server.db.engine import make_engine
from hepai_server.gateway.ledger import Journal, UsageRow
from hepai_server.gateway.usage import UsageRecorder
from hepai_server.governance.verify import disagreements
from hepai_server.services import accounts, usage_report
from hepai_server.services.usage_report import Totals, UsageFilter
from tests.conftest import DATABASES, POSTGRES_ADMIN_URL

#: The span the rows are spread over: 2026-10-01 (a Thursday) to 2026-11-29 (a Sunday).
FIRST = date(2026, 10, 1)
DAYS = 60


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated database of each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'usage.db'}"
        migrate.upgrade(url)
        yield url
        return
    name = f"hepai_totals_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0]
    url = f"postgresql+psycopg://{base}/{name}"
    migrate.upgrade(url)
    yield url
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def some_rows(count: int, *, users: list[int | None], seed: int = 1) -> list[UsageRow]:
    """Rows over the span's days, several accounts (and none) and three models, some failed,
    some with pages or bytes instead of tokens, each at a random moment of its day."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        moment = datetime.combine(FIRST, datetime.min.time(), UTC) + timedelta(
            seconds=rng.uniform(0, DAYS * 86400)
        )
        prompt, completion = rng.randint(1, 500), rng.choice([None, rng.randint(1, 90)])
        rows.append(
            UsageRow(
                *(f"t-{seed}-{n}", rng.choice(users), None, "chat.completions"),
                *(rng.choice(["a/one", "a/two", "b/tool"]), None, False),
                *(rng.choice([200, 200, 200, 429, 502]), None),
                *(prompt, completion, prompt + (completion or 0), None, None),
                *(rng.choice([None, 3]), rng.choice([None, 2**33]), False, 5.0, None),
                *(rng.randint(0, 10**9), None, None, None, moment.timestamp()),
            )
        )
    return rows


def recorder(url: str, root: Path) -> tuple[sa.Engine, UsageRecorder]:
    engine = make_engine(url)
    return engine, UsageRecorder(
        engine, Journal(root), flush_seconds=60, batch_size=500, budget_zone=UTC
    )


def counted(rows: list[UsageRow]) -> list[int]:
    return [
        len(rows),
        sum(row.status_code >= 400 for row in rows),
        *(
            sum(getattr(row, name) or 0 for row in rows)
            for name in ("prompt_tokens", "completion_tokens", "total_tokens", "pages", "bytes")
        ),
        sum(row.cost_nanos for row in rows),
    ]


def day_of(row: UsageRow) -> date:
    return datetime.fromtimestamp(row.created_at, UTC).date()


def test_writers_at_once_keep_every_total_the_sum_of_the_rows(database: str, tmp_path) -> None:
    """Four writers (as four replicas would) add batches at the same moment to the same days,
    accounts and models, some of them rows another writer has written already: each total
    counts each row once, and `usage verify` finds every total agreeing with the rows."""
    rows = some_rows(800, users=[1, 2, 3, None])
    shares = [rows[k * 200 : (k + 1) * 200] + rows[((k + 1) % 4) * 200 :][:60] for k in range(4)]
    writers = [recorder(database, tmp_path / f"ledger-{k}") for k in range(4)]
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def write(writer: UsageRecorder, share: list[UsageRow]) -> None:
        try:
            start.wait()
            for first in range(0, len(share), 20):
                writer.write(share[first : first + 20])
        except BaseException as error:  # reported below, not lost in the thread
            failures.append(error)

    threads = [
        threading.Thread(target=write, args=(writer, share))
        for (_engine, writer), share in zip(writers, shares, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine, _writer in writers:
        engine.dispose()
    assert failures == []
    engine = sa.create_engine(database)
    try:
        with Session(engine) as session:
            assert disagreements(session, zone=UTC) == []
        with engine.connect() as connection:
            for table in ("usage_daily", "usage_model_daily", "usage_user_weekly"):
                sums = connection.execute(
                    sa.text(f"SELECT sum(requests), sum(errors), sum(cost_nanos) FROM {table}")
                ).one()
                assert [int(value) for value in sums] == [
                    800,
                    counted(rows)[1],
                    counted(rows)[7],
                ], table
    finally:
        engine.dispose()


#: Spans (first and last day, as offsets from FIRST) that cut weeks every way: all of it (a
#: Thursday to a Sunday), mid-week to mid-week, inside one week, exactly one Monday-to-Sunday
#: week, one day, and days before any usage.
SPANS = [(0, DAYS - 1), (3, 47), (5, 9), (4, 10), (20, 20), (-9, -2)]


def test_reports_of_every_account_say_what_the_rows_add_up_to(database: str, tmp_path) -> None:
    """Every account's report (per day, per model, per day and model, overall), the models
    it used and each account's totals (the top users and groups), read from the per-model and
    weekly totals, are the rows' sums over any span of days; so is a report narrowed to a
    model or a group, which reads the per-user daily totals."""
    engine = sa.create_engine(database)
    with Session(engine) as session:
        ids = [
            accounts.create_user(session, username=f"u{n}", password=None, groups=[f"g{n % 2}"]).id
            for n in range(3)
        ]
        session.commit()
    rows = some_rows(600, users=[*ids, None], seed=2)
    writing, writer = recorder(database, tmp_path / "ledger")
    writer.write(rows)
    writing.dispose()
    try:
        with Session(engine) as session:
            for start, end in SPANS:
                first, last = FIRST + timedelta(days=start), FIRST + timedelta(days=end)
                inside = [row for row in rows if first <= day_of(row) <= last]
                every = UsageFilter(first_day=first, last_day=last)
                assert_report(usage_report.report(session, every), inside, first, last)
                assert usage_report.per_account(session, every) == per_user(inside)
                assert usage_report.models_used(session, every) == sorted(
                    {row.model for row in inside}
                )
                one_model = UsageFilter(first_day=first, last_day=last, model="a/two")
                of_model = [row for row in inside if row.model == "a/two"]
                assert_report(usage_report.report(session, one_model), of_model, first, last)
                assert usage_report.per_account(session, one_model) == per_user(of_model)
                group = UsageFilter(first_day=first, last_day=last, group="g0")
                members = {ids[0], ids[2]}
                of_group = [row for row in inside if row.user_id in members]
                assert_report(usage_report.report(session, group), of_group, first, last)
                assert usage_report.per_account(session, group) == per_user(of_group)
    finally:
        engine.dispose()


def per_user(rows: list[UsageRow]) -> dict[int, Totals]:
    users = {row.user_id or 0 for row in rows}
    return {
        user: Totals(*counted([row for row in rows if (row.user_id or 0) == user]))
        for user in users
    }


def assert_report(
    report: usage_report.Report, rows: list[UsageRow], first: date, last: date
) -> None:
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    assert report.overall == Totals(*counted(rows))
    assert report.per_day == [
        (day, Totals(*counted([row for row in rows if day_of(row) == day]))) for day in days
    ]
    models = {row.model for row in rows}
    assert dict(report.per_model) == {
        model: Totals(*counted([row for row in rows if row.model == model])) for model in models
    }
    assert report.day_model == {
        (day, model): (len(same), sum(row.total_tokens or 0 for row in same))
        for day in days
        for model in models
        if (same := [row for row in rows if day_of(row) == day and row.model == model])
    }


@pytest.mark.parametrize(
    ("table", "change"),
    [
        ("usage_model_daily", "UPDATE usage_model_daily SET pages = pages + 1"),
        ("usage_user_weekly", "DELETE FROM usage_user_weekly WHERE user_id = 2"),
    ],
)
def test_verify_finds_a_per_model_or_weekly_total_that_disagrees_with_the_rows(
    tmp_path, table: str, change: str
) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    migrate.upgrade(url)
    writing, writer = recorder(url, tmp_path / "ledger")
    writer.write(some_rows(50, users=[1, 2]))
    writing.dispose()
    engine = sa.create_engine(url)
    try:
        with Session(engine) as session:
            assert disagreements(session, zone=UTC) == []
        with engine.begin() as connection:
            connection.execute(sa.text(change))
        with Session(engine) as session:
            found = disagreements(session, zone=UTC)
    finally:
        engine.dispose()
    assert found and all(line.startswith(f"{table} ") for line in found), found
