"""Usage in the portal: the daily totals the pages read agree with the per-request rows, each
account sees its own usage, admins filter everyone's, and the CSV export says the same."""

from __future__ import annotations

import csv
import io
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import openai
import psycopg
import pytest
import sqlalchemy as sa

from hepai_server.db import migrate
from hepai_server.portal.views.usage import spreadsheet_safe
from tests.conftest import DATABASES, POSTGRES_ADMIN_URL
from tests.portal import Visitor
from tests.stack import Platform, Server


def wait_for_rows(platform: Platform, username: str, count: int) -> None:
    """Until ``count`` usage rows of the user are written (the writer batches every 50 ms)."""
    engine = sa.create_engine(platform.sqlalchemy_url)
    query = sa.text(
        "SELECT count(*) FROM usage_records r JOIN users u ON u.id = r.user_id "
        "WHERE u.username = :name"
    )
    deadline = time.monotonic() + 15
    try:
        while True:
            with engine.connect() as connection:
                found = connection.execute(query, {"name": username}).scalar_one()
            if found >= count:
                assert found == count
                return
            assert time.monotonic() < deadline, f"{found} of {count} usage rows"
            time.sleep(0.05)
    finally:
        engine.dispose()


def make_calls(server: Server, key: str, chats: int) -> None:
    client = server.openai(key)
    for _ in range(chats):
        client.chat.completions.create(
            model="mock/chat", messages=[{"role": "user", "content": "one two three"}]
        )


def totals_by_model(platform: Platform, username: str, table: str) -> dict[str, tuple[int, ...]]:
    counted = (
        "count(*), sum(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END), "
        "coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
        "coalesce(sum(total_tokens), 0)"
        if table == "usage_records"
        else "sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens), "
        "sum(total_tokens)"
    )
    engine = sa.create_engine(platform.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    f"SELECT model, {counted} FROM {table} t JOIN users u ON u.id = t.user_id "
                    "WHERE u.username = :name GROUP BY model"
                ),
                {"name": username},
            )
            return {row[0]: tuple(int(v) for v in row[1:]) for row in rows}
    finally:
        engine.dispose()


@pytest.mark.both_databases
def test_daily_totals_add_up_the_usage_rows_and_keys_show_their_last_use(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    username = unique("totals")
    key = platform.create_user(username)
    client = server.openai(key)
    make_calls(server, key, 3)
    stream = client.chat.completions.create(
        model="mock/chat",
        messages=[{"role": "user", "content": "a b c d"}],
        stream=True,
        extra_body={"mock": {"chunks": 7}},
    )
    assert len(list(stream)) > 7
    client.embeddings.create(model="mock/embed", input=["x", "y"])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="no/such-model", messages=[{"role": "user", "content": "hi"}]
        )
    wait_for_rows(platform, username, 6)

    rows = totals_by_model(platform, username, "usage_records")
    daily = totals_by_model(platform, username, "usage_daily")
    assert daily == rows
    assert daily["mock/chat"][0] == 4 and daily["mock/chat"][4] > 0
    assert daily["no/such-model"][:2] == (1, 1)

    with Visitor(server.url) as visitor:
        visitor.sign_in(username)
        page = visitor.get("/settings/keys").text
    last_used = re.search(r'data-last-used="([^"]*)"', page)
    assert last_used and last_used.group(1), "the key's last use is not shown"
    assert abs(datetime.fromisoformat(last_used.group(1)) - datetime.now(UTC)) < timedelta(
        minutes=5
    )


@pytest.mark.both_databases
def test_each_account_sees_its_own_usage_and_admins_filter_everyones(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    alice, bob, admin, group = unique("alice"), unique("bob"), unique("boss"), unique("grp")
    alice_key = platform.create_user(alice)
    bob_key = platform.create_user(bob, "--group", group)
    platform.create_user(admin, "--admin")
    make_calls(server, alice_key, 2)
    make_calls(server, bob_key, 3)
    wait_for_rows(platform, alice, 2)
    wait_for_rows(platform, bob, 3)

    with Visitor(server.url) as visitor:
        visitor.sign_in(alice)
        page = visitor.get("/usage").text
        assert 'data-total="requests">2<' in page
        # A user's filters cannot reach another account.
        assert 'data-total="requests">2<' in visitor.get(f"/usage?user={bob}").text
        own_csv = list(csv.DictReader(io.StringIO(visitor.get("/usage.csv").text)))
        assert {row["user"] for row in own_csv} == {alice}
        assert sum(int(row["requests"]) for row in own_csv) == 2

    with Visitor(server.url) as visitor:
        visitor.sign_in(admin)
        assert 'data-total="requests">3<' in visitor.get(f"/usage?user={bob}").text
        assert 'data-total="requests">3<' in visitor.get(f"/usage?group={group}").text
        assert 'data-total="requests">0<' in visitor.get("/usage?user=nobody-at-all").text
        by_model = visitor.get(f"/usage?user={bob}&model=mock/embed").text
        assert 'data-total="requests">0<' in by_model
        answer = visitor.get(f"/usage.csv?user={bob}&days=7")
        assert answer.headers["content-type"].startswith("text/csv")
        assert answer.headers["content-disposition"].startswith("attachment;")
        rows = list(csv.DictReader(io.StringIO(answer.text)))
        assert {row["user"] for row in rows} == {bob}
        assert rows[0].keys() >= {"day", "model", "requests", "total_tokens"}
        assert sum(int(row["requests"]) for row in rows) == 3
        today = datetime.now(UTC).date()
        assert all(
            today - timedelta(days=1) <= date.fromisoformat(row["day"]) <= today for row in rows
        ), "days are ISO dates, as on every database"
        everyone = visitor.get("/usage").text
        assert "Every account" in everyone


def test_csv_cells_that_look_like_formulas_stay_text() -> None:
    assert spreadsheet_safe("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert spreadsheet_safe("@cmd") == "'@cmd"
    assert spreadsheet_safe("mock/chat") == "mock/chat"
    assert spreadsheet_safe(-3) == -3


@pytest.fixture(params=DATABASES)
def empty_database(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    name = f"hepai_backfill_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    request.addfinalizer(lambda: drop_database(name))
    return f"postgresql+psycopg://{POSTGRES_ADMIN_URL.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"


def drop_database(name: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_upgrading_fills_the_daily_totals_from_earlier_usage(empty_database: str) -> None:
    migrate.upgrade(empty_database, "0004")
    engine = sa.create_engine(empty_database)
    late = datetime(2026, 11, 20, 23, 59, tzinfo=UTC)
    rows = [
        # Two on one UTC day, one just after midnight, one by another user, one refused.
        (1, "m/a", 200, 10, late - timedelta(hours=5)),
        (1, "m/a", 200, 20, late),
        (1, "m/a", 200, 40, late + timedelta(minutes=2)),
        (2, "m/a", 200, 80, late),
        (1, "m/b", 429, None, late),
    ]
    try:
        with engine.begin() as connection:
            for user_id, model, status, tokens, created in rows:
                connection.execute(
                    sa.text(
                        "INSERT INTO usage_records (request_id, user_id, endpoint, model, "
                        "stream, status_code, total_tokens, usage_estimated, latency_ms, "
                        "created_at) VALUES ('r', :u, 'chat.completions', :m, false, :s, :t, "
                        "false, 1.0, :c)"
                    ),
                    {"u": user_id, "m": model, "s": status, "t": tokens, "c": created},
                )
        migrate.upgrade(empty_database)
        with engine.connect() as connection:
            found = connection.execute(
                sa.text(
                    "SELECT day, user_id, model, requests, errors, total_tokens FROM usage_daily "
                    "ORDER BY day, user_id, model"
                )
            ).all()
    finally:
        engine.dispose()
    days = [
        (str(day), user, model, n, errors, tokens) for day, user, model, n, errors, tokens in found
    ]
    assert days == [
        ("2026-11-20", 1, "m/a", 2, 0, 30),
        ("2026-11-20", 1, "m/b", 1, 1, 0),
        ("2026-11-20", 2, "m/a", 1, 0, 80),
        ("2026-11-21", 1, "m/a", 1, 0, 40),
    ]
