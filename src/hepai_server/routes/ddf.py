"""The DDF controller routes the hepai SDK and its workers call: register, heartbeat, stop,
list and look up workers. Every WorkerInfo goes out with exactly the SDK's keys."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.tables import Worker
from hepai_server.errors import InvalidRequest
from hepai_server.gateway import registry
from hepai_server.protocol.ddf import STATUS_KEYS, parse_registration
from hepai_server.routes.http import authenticate, json_body, json_response


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string", param=name)
    return value


async def register_worker(request: Request) -> Response:
    """First registration and every heartbeat: an idempotent upsert keyed by worker id."""
    gateway, caller = await authenticate(request, full=True)
    body = await json_body(request)
    registration = parse_registration(body)
    secret = body.get("secret_key") if isinstance(body.get("secret_key"), str) else None
    address = await gateway.dispatcher.admit(registration.address, trusted=caller.is_admin)
    names = registry.Names(
        provider_keys=gateway.catalog.claim_keys(), builtin_keys=gateway.builtin_name_keys
    )

    def work(session: Session) -> dict[str, Any]:
        worker = registry.register(
            session,
            caller=caller,
            registration=registration,
            address=address,
            secret=secret,
            now=time.time(),
            names=names,
        )
        return registry.info_for(worker, caller=caller)

    info = await gateway.transact(work)
    for model in registration.models:
        gateway.metrics.worker_queue.labels(registration.worker_id, model).set(
            registration.queue_length
        )
    return json_response(info)


async def stop_worker(request: Request) -> Response:
    gateway, caller = await authenticate(request, full=True)
    body = await json_body(request)
    worker_id = _text(body, "worker_id")
    if not worker_id:
        raise InvalidRequest("'worker_id' is required", param="worker_id")
    worker = await gateway.transact(lambda s: registry.stop(s, caller=caller, worker_id=worker_id))
    shutdown = False
    if body.get("permanent") is True:
        shutdown = await gateway.dispatcher.manage(worker, "POST", "/shutdown_worker") is not None
    return json_response(
        {
            "id": worker.id,
            "stopped": True,
            "message": f"Worker `{worker.id}` stopped",
            "shutdown": shutdown,
        }
    )


async def list_workers(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    expiry = gateway.settings.worker_expiry_seconds

    def work(session: Session) -> list[dict[str, Any]]:
        workers = registry.live_workers(session, caller=caller, now=time.time(), expiry=expiry)
        return [registry.info_for(worker, caller=caller) for worker in workers]

    return json_response({"object": "list", "data": await gateway.transact(work)})


async def get_worker_info(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    body = await json_body(request)
    worker_id, model_name = _text(body, "worker_id"), _text(body, "model_name")
    expiry = gateway.settings.worker_expiry_seconds

    def work(session: Session) -> dict[str, Any]:
        if worker_id:
            worker = registry.visible_worker(session, caller=caller, worker_id=worker_id)
            return registry.info_for(worker, caller=caller)
        if not model_name:
            raise InvalidRequest("give 'worker_id' or 'model_name'", param="model_name")
        worker = registry.worker_for_model(
            session,
            caller=caller,
            model_name=model_name,
            now=time.time(),
            expiry=expiry,
            load=gateway.dispatcher.load,
        )
        return registry.info_for(worker, caller=caller, only_model=model_name)

    return json_response(await gateway.transact(work))


async def get_worker_status(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    body = await json_body(request)
    worker_id = _text(body, "worker_id")
    if not worker_id:
        raise InvalidRequest("'worker_id' is required", param="worker_id")
    worker = await gateway.transact(
        lambda s: registry.visible_worker(s, caller=caller, worker_id=worker_id)
    )
    status: dict[str, Any] = dict(worker.info.get("status_info") or {})
    status["status"] = worker.status
    if body.get("refresh") is True:
        fresh = await gateway.dispatcher.manage(worker, "GET", "/worker/get_status")
        if isinstance(fresh, dict):
            status.update({k: v for k, v in fresh.items() if k in STATUS_KEYS})
    return json_response({k: v for k, v in status.items() if k in STATUS_KEYS})


async def refresh_all_workers(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    expiry = gateway.settings.worker_expiry_seconds
    live = await gateway.transact(
        lambda s: len(registry.live_workers(s, caller=caller, now=time.time(), expiry=expiry)),
    )
    return json_response({"success": True, "live_workers": live})


async def list_agents(request: Request) -> Response:
    """Agent workers (type ``agent``) the caller may use, as AgentInfo-like rows."""
    gateway, caller = await authenticate(request)
    expiry = gateway.settings.worker_expiry_seconds

    def work(session: Session) -> list[dict[str, Any]]:
        rows = []
        for worker in registry.live_workers(session, caller=caller, now=time.time(), expiry=expiry):
            if worker.info.get("type") != "agent":
                continue
            for resource in worker.info.get("resource_info", []):
                rows.append(_agent_row(worker, resource))
        return rows

    return json_response({"object": "list", "data": await gateway.transact(work)})


def _agent_row(worker: Worker, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": resource.get("model_name"),
        "name": resource.get("model_name"),
        "owner": worker.owner.username,
        "available": True,
        "description": resource.get("model_description"),
        "author": resource.get("model_author"),
        "version": resource.get("model_version"),
    }
