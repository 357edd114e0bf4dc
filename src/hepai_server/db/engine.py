"""make_engine(url) and the session factory; SQLite by default, PostgreSQL in production."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from hepai_server.db.deadline import Deadlines, abort_postgresql, abort_sqlite
from hepai_server.errors import DatabaseUnavailable

T = TypeVar("T")

#: How much longer than PostgreSQL's own statement_timeout a silent connection is given before
#: it is cut: the server cancels a slow statement cleanly first, when it still can.
CUT_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    """How long the server waits on its database, in seconds, and how many connections it
    keeps: the serving processes' settings (migrations and the CLI wait as long as it takes)."""

    connect: float
    statement: float
    pool: float
    pool_size: int = 5
    max_overflow: int = 5


def make_engine(url: str, limits: Limits | None = None, *, pooled: bool = True) -> Engine:
    """An engine tuned for this server: WAL and a busy timeout on SQLite, so several processes
    can share one file; a pre-pinged pool on PostgreSQL. With ``limits``, no call waits on the
    database longer than they allow (see ``deadline``); unpooled, each use connects anew (the
    readiness probe: it asks whether the database answers, not whether the pool has room)."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, limits, pooled=pooled)
    if limits is None:
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    connect_args = {
        # libpq counts whole seconds and treats less than 2 as 2.
        "connect_timeout": max(2, math.ceil(limits.connect)),
        "options": f"-c statement_timeout={int(limits.statement * 1000)}",
        # A peer that vanished (no RST) is noticed by the kernel, not only by the deadline.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": int((limits.statement + CUT_AFTER) * 1000),
    }
    pool: dict[str, Any] = {"poolclass": NullPool}
    if pooled:
        pool = {
            "pool_size": limits.pool_size,
            "max_overflow": limits.max_overflow,
            "pool_timeout": limits.pool,
        }
    engine = create_engine(url, connect_args=connect_args, **pool)
    watch(engine, Deadlines(limits.statement + CUT_AFTER, abort_postgresql), ping=pooled)
    return engine


def _sqlite_engine(url: str, limits: Limits | None, *, pooled: bool) -> Engine:
    database = url.split("///", 1)[-1]
    in_memory = not database or database == ":memory:"
    if not in_memory:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    busy = limits.statement if limits else 30.0
    options: dict[str, Any] = {"connect_args": {"timeout": busy}}
    if not in_memory and not pooled:
        options["poolclass"] = NullPool
    elif limits is not None and not in_memory:
        options.update(
            pool_size=limits.pool_size, max_overflow=limits.max_overflow, pool_timeout=limits.pool
        )
    engine = create_engine(url, **options)
    event.listen(engine, "connect", lambda connection, _record: _tune_sqlite(connection, busy))
    if limits is not None:
        # The busy timeout bounds waiting for a lock; this bounds a statement that runs.
        watch(engine, Deadlines(limits.statement + CUT_AFTER, abort_sqlite), ping=False)
    return engine


def _tune_sqlite(connection: Any, busy: float) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
    cursor.close()


def watch(engine: Engine, deadlines: Deadlines, *, ping: bool) -> None:
    """Arm ``deadlines`` around everything the engine asks of the server, and (``ping``) check
    each connection as it leaves the pool, under the same deadline.

    The ping is ours rather than ``pool_pre_ping``'s, which no event surrounds: a hung server
    would hold it forever.
    """

    def before_execute(connection: Any, *_args: Any) -> None:
        deadlines.arm(connection.connection.dbapi_connection)

    def after_execute(connection: Any, *_args: Any) -> None:
        deadlines.disarm(connection.connection.dbapi_connection)

    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        deadlines.arm(dbapi_connection)
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The pool throws this connection away and checks out another (three tries).
            raise exc.DisconnectionError(str(error)) from error
        finally:
            deadlines.disarm(dbapi_connection)

    def arm_raw(dbapi_connection: Any, *_args: Any) -> None:
        deadlines.arm(dbapi_connection)

    def disarm_raw(dbapi_connection: Any, *_args: Any) -> None:
        deadlines.disarm(dbapi_connection)

    event.listen(engine, "before_cursor_execute", before_execute)
    event.listen(engine, "after_cursor_execute", after_execute)
    event.listen(engine, "handle_error", lambda context: _disarm_failed(deadlines, context))
    event.listen(engine, "commit", before_execute)
    event.listen(engine, "rollback", before_execute)
    if ping:
        event.listen(engine, "checkout", on_checkout)
    # Returning a connection rolls it back first ("reset"); checkin follows once it answered.
    event.listen(engine, "reset", arm_raw)
    event.listen(engine, "checkin", disarm_raw)
    event.listen(engine, "close", disarm_raw)
    event.listen(engine, "engine_disposed", lambda _engine: deadlines.stop())


def _disarm_failed(deadlines: Deadlines, context: Any) -> None:
    connection = context.connection
    if connection is not None and not connection.invalidated:
        deadlines.disarm(connection.connection.dbapi_connection)


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the database did not answer, as opposed to refusing a statement:
    refused or lost connections, timeouts, a pool with no free connection; also an error raised
    while cleaning up after one (SQLAlchemy's PendingRollbackError on a lost connection)."""
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, exc.OperationalError | exc.TimeoutError):
            return True
        if isinstance(seen, exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def answering() -> Iterator[None]:
    """Turns the database not answering into DatabaseUnavailable (503, Retry-After)."""
    try:
        yield
    except exc.SQLAlchemyError as error:
        if is_unavailable(error):
            raise unavailable(error) from error
        raise


def unavailable(error: BaseException) -> DatabaseUnavailable:
    reason = (
        "no database connection came free in time"
        if isinstance(error, exc.TimeoutError)
        else "the database did not answer"
    )
    return DatabaseUnavailable(f"{reason}; try again shortly")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


async def transact(engine: Engine, work: Callable[[Session], T]) -> T:
    """Run ``work`` in a thread with a session that commits when it returns."""

    def run() -> T:
        with answering(), Session(engine, expire_on_commit=False) as session:
            result = work(session)
            session.commit()
            return result

    return await asyncio.to_thread(run)
