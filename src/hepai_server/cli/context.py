"""What every CLI command shares: the settings, a database session, and the cache generation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from sqlalchemy.orm import Session

from hepai_server.config import Settings
from hepai_server.db import migrate
from hepai_server.db.engine import make_engine
from hepai_server.errors import HepAIError
from hepai_server.state.generation import Generation


@contextmanager
def database(*, changes_callers: bool = False) -> Iterator[Session]:
    """A migrated database session, committed on success.

    ``changes_callers``: the command changes what the gateway caches about callers (revokes a key,
    disables a user), so every server process on this machine must forget its cache.
    """
    settings = Settings()
    migrate.ensure_current(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except HepAIError as error:
                raise click.ClickException(error.message) from None
        if changes_callers:
            generation = Generation(settings.data_dir / "auth.generation")
            generation.bump()
            generation.close()
    finally:
        engine.dispose()
