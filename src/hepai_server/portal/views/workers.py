"""Admin → workers: every DDF worker with its models, owner, status, queue and last heartbeat;
stopping one takes it out of routing and asks its process to shut down."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.tables import Worker
from hepai_server.errors import InvalidRequest
from hepai_server.gateway import registry
from hepai_server.portal.web import Portal, done, gateway, record_action


@dataclass(frozen=True, slots=True)
class WorkerRow:
    id: str
    owner: str
    models: tuple[str, ...]
    address: str
    #: live, expired (no heartbeat lately), stopped, or held (stopped by an admin).
    state: str
    status: str
    queue_length: int
    seconds_since_heartbeat: int


async def workers_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    gw = gateway(request)
    now, expiry = time.time(), gw.settings.worker_expiry_seconds

    def work(session: Session) -> list[WorkerRow]:
        return [
            WorkerRow(
                id=worker.id,
                owner=worker.owner.username,
                models=tuple(model.model_name for model in worker.models),
                address=worker.address,
                state="held"
                if worker.held
                else "stopped"
                if worker.stopped
                else "live"
                if registry.is_live(worker, now=now, expiry=expiry)
                else "expired",
                status=worker.status,
                queue_length=worker.queue_length,
                seconds_since_heartbeat=max(0, int(now - worker.last_heartbeat)),
            )
            for worker in registry.all_workers(session)
        ]

    rows = await gw.transact(work)
    return portal.render(request, "admin_workers.html", viewer=viewer, workers=rows)


async def change_worker(request: Request, portal: Portal) -> Response:
    """Stop a worker (held out, its heartbeats refused, its process asked to exit) or let a
    held one back. The id travels in the form, never in the URL: worker ids are chosen by
    their owners and may hold any character."""
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    worker_id, action = str(form.get("worker_id") or ""), form.get("action")
    if action not in ("stop", "release"):
        raise InvalidRequest("action must be stop or release", param="action")
    held = action == "stop"

    def work(session: Session) -> Worker:
        worker = registry.hold(session, caller=viewer.caller(), worker_id=worker_id, held=held)
        detail = {"models": [model.model_name for model in worker.models]}
        record_action(session, viewer, request, f"worker.{action}", worker.id, detail)
        return worker

    worker = await gateway(request).transact(work)
    if held:
        await gateway(request).dispatcher.manage(worker, "POST", "/shutdown_worker")
    message = "workers.stopped_notice" if held else "workers.released_notice"
    return await done(request, viewer, "/admin/workers", message, id=worker_id)
