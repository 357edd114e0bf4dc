"""Admin → workers: every DDF worker with its models, owner, status, queue and last heartbeat;
stopping one takes it out of routing and asks its process to shut down."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server import audit
from hepai_server.gateway import registry
from hepai_server.gateway.routes.ddf import call_worker
from hepai_server.portal.views.admin import client_ip
from hepai_server.portal.web import Portal, gateway, redirect


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


async def stop_worker(request: Request, portal: Portal) -> Response:
    """Hold the worker out (its heartbeats are refused) and ask its process to exit."""
    address = await set_held(request, portal, held=True)
    await call_worker(gateway(request), "POST", f"{address}/shutdown_worker")
    return redirect("/admin/workers")


async def release_worker(request: Request, portal: Portal) -> Response:
    """Let a held worker back: its next heartbeat registers it again."""
    await set_held(request, portal, held=False)
    return redirect("/admin/workers")


async def set_held(request: Request, portal: Portal, *, held: bool) -> str:
    viewer = await portal.viewer(request, admin=True)
    await portal.form(request, viewer)
    worker_id = request.path_params["worker_id"]

    def work(session: Session) -> str:
        worker = registry.hold(session, caller=viewer.caller(), worker_id=worker_id, held=held)
        audit.record(
            session,
            actor_id=viewer.user_id,
            actor=viewer.username,
            action="worker.stop" if held else "worker.release",
            target=worker.id,
            detail={"models": [model.model_name for model in worker.models]},
            ip=client_ip(request),
        )
        return worker.address

    return await gateway(request).transact(work)
