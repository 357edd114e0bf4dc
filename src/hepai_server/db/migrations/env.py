"""Alembic environment: the URL comes from the caller (hepai_server.db.migrate), never a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from hepai_server.db.engine import make_engine
from hepai_server.db.tables import Base

url = context.config.attributes["url"]
sqlite = url.startswith("sqlite")
engine = make_engine(url)
try:
    with engine.connect() as connection:
        if sqlite:
            # SQLite alters a table by copying it and dropping the original; with foreign keys
            # enforced, that drop would cascade to every row that references it (all API keys
            # of a rebuilt users table). Enforcement is off for the migration and the
            # references are checked once it is done. (The pragma is ignored in a transaction.)
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()  # end SQLAlchemy's implicit transaction before Alembic's
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=sqlite,
        )
        with context.begin_transaction():
            context.run_migrations()
        if sqlite:
            broken = connection.execute(text("PRAGMA foreign_key_check")).all()
            if broken:
                raise RuntimeError(f"the migration left broken references: {broken[:5]}")
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
finally:
    engine.dispose()
