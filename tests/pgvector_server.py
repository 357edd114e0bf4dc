"""PostgreSQL with pgvector for tests, from the pgserver wheel (the system's PostgreSQL has no
pgvector): a private server in a temporary directory, on a Unix socket, stopped afterwards."""

from __future__ import annotations

import secrets
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


@contextmanager
def pgvector_postgres() -> Iterator[str]:
    """The URL of a fresh database on a private PostgreSQL that has pgvector."""
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime directory at import, which warns when
        # XDG_RUNTIME_DIR is unset (as it is here); the tests turn warnings into errors.
        warnings.simplefilter("ignore")
        import pgserver

    with tempfile.TemporaryDirectory(prefix="pgvector-") as root:
        server = pgserver.get_server(Path(root), cleanup_mode="stop")
        try:
            name = f"hepai_kb_{secrets.token_hex(4)}"
            socket_dir = server.get_uri().rsplit("host=", 1)[1]
            admin = f"postgresql://postgres@/postgres?host={socket_dir}"
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(f'CREATE DATABASE "{name}"')
            yield f"postgresql://postgres@/{name}?host={socket_dir}"
        finally:
            server.cleanup()
