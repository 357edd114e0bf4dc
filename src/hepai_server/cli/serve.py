"""`hepai-server serve`: migrate the database, then run the gateway on uvicorn."""

from __future__ import annotations

import click
import uvicorn

from hepai_server.config import Settings
from hepai_server.db import migrate


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=4260, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes sharing the port.",
)
def serve(host: str, port: int, workers: int) -> None:
    """Serve the API (and migrate the database first)."""
    settings = Settings()
    settings.configure_logging()
    migrate.upgrade(settings.sqlalchemy_url)
    click.echo(f"hepai-server listening on http://{host}:{port}/apiv2", err=True)
    uvicorn.run(
        "hepai_server.gateway.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )
