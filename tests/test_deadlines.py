"""Deadlines on database connections: a connection silent past its deadline is cut, one that
answered in time is left alone, and the engine's limits turn a stuck statement into 503."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from hepai_server.db.deadline import Deadlines, abort_sqlite
from hepai_server.db.engine import Limits, answering, make_engine
from hepai_server.errors import DatabaseUnavailable

#: A statement that runs for minutes unless interrupted.
ENDLESS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"


class Connection:
    def __init__(self) -> None:
        self.cut = threading.Event()


def test_only_the_connection_still_waiting_is_cut() -> None:
    deadlines = Deadlines(0.1, lambda connection: connection.cut.set())
    waiting, answered = Connection(), Connection()
    deadlines.arm(waiting)
    deadlines.arm(answered)
    deadlines.disarm(answered)
    try:
        assert waiting.cut.wait(10)
        assert not answered.cut.is_set()
    finally:
        deadlines.stop()


def test_a_running_sqlite_statement_is_interrupted() -> None:
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    deadlines = Deadlines(0.2, abort_sqlite)
    deadlines.arm(connection)
    try:
        with pytest.raises(sqlite3.OperationalError, match="interrupted"):
            connection.execute(ENDLESS).fetchone()
    finally:
        deadlines.stop()
        connection.close()


def test_a_stuck_statement_answers_database_unavailable(tmp_path: Path) -> None:
    engine = make_engine(
        f"sqlite:///{tmp_path / 'stuck.db'}", Limits(connect=1, statement=0.2, pool=1)
    )
    try:
        with pytest.raises(DatabaseUnavailable), answering(), engine.connect() as connection:
            connection.execute(text(ENDLESS)).scalar()
        # The engine works on afterwards.
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
