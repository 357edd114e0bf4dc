"""Alembic environment: the URL comes from the caller (hepai_server.db.migrate), never a file."""

from __future__ import annotations

from alembic import context

from hepai_server.db.engine import make_engine
from hepai_server.db.tables import Base

url = context.config.attributes["url"]
engine = make_engine(url)
try:
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=url.startswith("sqlite"),
        )
        with context.begin_transaction():
            context.run_migrations()
finally:
    engine.dispose()
