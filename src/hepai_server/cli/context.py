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
from hepai_server.state.changes import CALLERS, CATALOG, CHANNEL
from hepai_server.state.generation import Generation


def tell_replicas(url: str, change: str) -> None:
    """Publish a change to every replica through Redis (a warning when it is away)."""
    import redis  # only with Redis configured: redis-py imports OpenTelemetry's SDK

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.publish(CHANNEL, change)
    except redis.RedisError as exc:
        click.echo(
            f"warning: other replicas were not told ({exc}); they see it within a minute", err=True
        )
    finally:
        client.close()


@contextmanager
def database(*, changes_callers: bool = False, changes_catalog: bool = False) -> Iterator[Session]:
    """A migrated database session, committed on success.

    ``changes_callers``: the command changes what the gateway caches about callers (revokes a key,
    disables a user), so every server process must forget its cache; ``changes_catalog``: it
    changes prices, budgets or limits, which every server process reloads. This machine's
    processes hear it through the generation files, other machines' through Redis.
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
        for changed, file, change in (
            (changes_callers, "auth.generation", CALLERS),
            (changes_catalog, "catalog.generation", CATALOG),
        ):
            if not changed:
                continue
            generation = Generation(settings.data_dir / file)
            generation.bump()
            generation.close()
            if settings.redis_url:
                tell_replicas(settings.redis_url, change)
    finally:
        engine.dispose()
