"""`hepai-server worker run`: serve a Worker class as a DDF worker."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import time
from pathlib import Path

import click

from hepai_server.config import hepai_api_key
from hepai_server.worker import Worker
from hepai_server.worker.builtin import BUILTINS
from hepai_server.worker.server import WorkerOptions, serve

log = logging.getLogger(__name__)


@click.group()
def worker() -> None:
    """Run workers."""


@worker.command("run")
@click.argument("spec")
@click.option("--controller", required=True, help="The platform, e.g. http://127.0.0.1:4260.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Port to listen on (default: a free one, picked at start).",
)
@click.option(
    "--worker-id",
    default=None,
    help="A stable id: task workers (hepai/mineru) keep their tasks under it across restarts "
    "(default: derived from the host, port and name).",
)
@click.option(
    "--heartbeat", default=60.0, show_default=True, type=float, help="Seconds between heartbeats."
)
@click.option("--priority", default=0, show_default=True, type=int, help="0 is tried first.")
@click.option("--weight", default=1.0, show_default=True, type=float, help="Share among equals.")
def run(
    spec: str,
    controller: str,
    host: str,
    port: int | None,
    worker_id: str | None,
    heartbeat: float,
    priority: int,
    weight: float,
) -> None:
    """Serve SPEC (module:Class, path/to/file.py:Class, or builtin:NAME for the platform's own
    embeddings and rerank workers), registered with the owner's key from HEPAI_API_KEY."""
    api_key = hepai_api_key()
    if not api_key:
        raise click.ClickException("set HEPAI_API_KEY to the owner's API key")
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = WorkerOptions(
        controller=controller,
        api_key=api_key,
        host=host,
        port=port or 0,
        worker_id=worker_id,
        heartbeat_seconds=heartbeat,
        priority=priority,
        weight=weight,
    )
    kind = load_worker(spec)
    # Models load in the constructor, for seconds to minutes: say so, and how long it took.
    log.info("loading %s ...", spec)
    started = time.monotonic()
    instance = kind()
    log.info("%s loaded in %.1f s", spec, time.monotonic() - started)
    serve(instance, options)


def load_worker(spec: str) -> type[Worker]:
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        if name not in BUILTINS:
            known = ", ".join(sorted(BUILTINS))
            raise click.BadParameter(f"no built-in worker {name!r}; known: {known}")
        spec = BUILTINS[name]
    location, _, class_name = spec.rpartition(":")
    if not location or not class_name:
        raise click.BadParameter("use module:Class or path/to/file.py:Class", param_hint="SPEC")
    if location.endswith(".py"):
        path = Path(location).resolve()
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise click.BadParameter(f"cannot load {location}", param_hint="SPEC")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(location)
    found = getattr(module, class_name, None)
    if not (isinstance(found, type) and issubclass(found, Worker)):
        raise click.BadParameter(f"{spec} is not a hepai_server.worker.Worker", param_hint="SPEC")
    return found
