"""`hepai-server serve`: migrate the database, then run the gateway on uvicorn (and, if asked,
the built-in workers beside it)."""

from __future__ import annotations

import logging

import click
import uvicorn

from hepai_server.cli.builtins import builtin_workers
from hepai_server.config import Settings, share_metrics_in
from hepai_server.db import migrate
from hepai_server.worker.builtin import BUILTINS

log = logging.getLogger(__name__)


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
@click.option(
    "--builtin",
    "builtins",
    multiple=True,
    type=click.Choice(sorted(BUILTINS)),
    help="Also run this built-in worker beside the gateway (repeat for several).",
)
def serve(host: str, port: int, workers: int, builtins: tuple[str, ...]) -> None:
    """Serve the API (and migrate the database first)."""
    settings = Settings()
    settings.configure_logging()
    migrate.upgrade(settings.sqlalchemy_url)
    # One directory per server (two may share a data dir), emptied: counters start at zero.
    share_metrics_in(settings.data_dir / "metrics" / str(port))
    log.info("hepai-server listening on http://%s:%d/apiv2", host, port)
    with builtin_workers(list(builtins), gateway_port=port):
        uvicorn.run(
            "hepai_server.app:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level=settings.log_level,
            # JSON lines: uvicorn's own records go through the root handler like ours.
            log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
            timeout_graceful_shutdown=30,
        )
