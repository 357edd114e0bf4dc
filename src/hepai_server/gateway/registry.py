"""The worker registry: register and heartbeat, stop, look up, and who may see what.

Durable in the database, so a restarted server and every gateway process know the same workers.
A worker is live while its last heartbeat is younger than ``worker_expiry_seconds`` (about
three missed 60-second heartbeats) and it has not been stopped; the next heartbeat of an
expired worker brings it back.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hepai_server.db.tables import ModelName, ModelPermission, User, Worker, WorkerModel
from hepai_server.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from hepai_server.gateway.routing import best
from hepai_server.protocol.ddf import Registration, permissions_of
from hepai_server.security.credentials import hash_api_key
from hepai_server.security.egress import WorkerAddress, parse_address
from hepai_server.security.names import check_name, claim_key, is_reserved
from hepai_server.services.accounts import Caller

EVERYONE = "all"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerRoute:
    """A live worker of one model, as dispatch needs it."""

    worker_id: str
    address: WorkerAddress
    priority: int
    weight: float
    speed: float
    queue_length: int
    functions: tuple[str, ...] = ()
    #: The worker's owner is trusted (an admin): the egress guard's allow-list does not apply.
    trusted: bool = False


@dataclass(frozen=True, slots=True)
class Names:
    """What model names registrations may not take: the providers' (by claim key), and the
    platform's own (``hepai/*`` and the built-in tools'), which only admins may claim."""

    provider_keys: frozenset[str]
    builtin_keys: frozenset[str]


#: Who may call a model, as an admin granted it: group names and usernames or e-mails.
Grant = tuple[Sequence[str], Sequence[str]]


def may_call(caller: Caller, model: WorkerModel, owner_id: int, grant: Grant | None = None) -> bool:
    """Admins, the owner, listed users, listed groups, or everyone when the groups say ``all``;
    and only models the caller's key is not barred from. An admin's grant for the model name
    (``grant``) replaces the groups and users its workers declared, as it does for provider
    models."""
    if caller.allowed_models is not None and model.model_name not in caller.allowed_models:
        return False
    groups, users = grant if grant is not None else (model.groups, model.users)
    return (
        caller.is_admin
        or caller.user_id == owner_id
        or EVERYONE in groups
        or caller.username in users
        or (caller.email is not None and caller.email in users)
        or not set(groups).isdisjoint(caller.groups)
    )


def grants_for(session: Session, names: Iterable[str]) -> dict[str, Grant]:
    """The admins' grants for these worker model names (set on the portal's model page)."""
    wanted = set(names)
    if not wanted:
        return {}
    rows = session.scalars(select(ModelPermission).where(ModelPermission.model_id.in_(wanted)))
    return {row.model_id: (row.groups, row.users) for row in rows}


def register(
    session: Session,
    *,
    caller: Caller,
    registration: Registration,
    address: WorkerAddress,
    secret: str | None,
    now: float,
    names: Names,
) -> Worker:
    """Upsert a worker: the first registration and every heartbeat are the same call.

    ``address`` is the registration's address as the egress guard parsed and admitted it."""
    worker = session.get(Worker, registration.worker_id)
    if worker is not None and worker.owner_id != caller.user_id and not caller.is_admin:
        raise PermissionDenied(f"worker id {registration.worker_id!r} belongs to another user")
    if worker is not None and worker.held:
        raise PermissionDenied(
            f"an administrator stopped worker {worker.id!r}; ask them to let it back"
        )
    # Whoever registers a worker owns it: only an admin may register an id another user's
    # worker had, and then the worker (and the names it serves) are the admin's.
    owner_id = caller.user_id
    for name in registration.models:
        claim_model_name(session, name=name, owner_id=owner_id, caller=caller, names=names)
    owner = session.get(User, owner_id)
    assert owner is not None
    payload = stamp_owner(registration.payload, owner.username)
    if worker is None:
        worker = Worker(id=registration.worker_id, owner_id=owner_id)
        session.add(worker)
    worker.owner = owner
    worker.address = str(address)
    worker.info = payload
    worker.secret_hash = hash_api_key(secret) if secret else None
    worker.priority = registration.priority
    worker.weight = registration.weight
    worker.speed = registration.speed
    worker.queue_length = registration.queue_length
    worker.status = registration.status
    worker.last_heartbeat = now
    worker.stopped = False
    session.flush()
    session.execute(delete(WorkerModel).where(WorkerModel.worker_id == worker.id))
    for resource in payload["resource_info"]:
        groups, users = permissions_of(resource)
        session.add(
            WorkerModel(
                worker_id=worker.id,
                model_name=resource["model_name"],
                groups=sorted(groups),
                users=sorted(users),
                functions=list(resource.get("model_functions") or []),
            )
        )
    session.flush()
    return worker


def claim_model_name(
    session: Session, *, name: str, owner_id: int, caller: Caller, names: Names
) -> None:
    """A model name is its first publisher's for good, look-alikes included; the platform's
    names are its admins'. An admin who publishes a name someone else holds takes it over,
    and the other holders' workers stop serving it at once (their next heartbeat is refused,
    saying why)."""
    key = claim_key(check_name(name))
    if key in names.provider_keys:
        raise Conflict(f"model name {name!r} is served by an upstream provider", param="model_name")
    if is_reserved(key, names.builtin_keys) and not caller.is_admin:
        raise PermissionDenied(
            f"model name {name!r} is reserved for the platform's own tools ('hepai/*' and the "
            "built-in tools' names); a worker of yours cannot serve it",
            param="model_name",
        )
    claim = session.scalar(select(ModelName).where(ModelName.key == key))
    if claim is None:
        session.add(ModelName(name=name, key=key, owner_id=owner_id))
        return
    if claim.owner_id == owner_id:
        if claim.name != name:
            raise Conflict(
                f"model name {name!r} looks like {claim.name!r}, which you hold already; "
                "use that spelling",
                param="model_name",
            )
        return
    if not caller.is_admin:
        raise PermissionDenied(
            f"model name {name!r} belongs to another user"
            + (f" (it looks like {claim.name!r})" if claim.name != name else ""),
            param="model_name",
        )
    evict(session, key=key, keep_owner=owner_id)
    claim.name, claim.owner_id = name, owner_id


def evict(session: Session, *, key: str, keep_owner: int) -> list[str]:
    """Take the name with ``key`` away from every worker not of ``keep_owner``; their ids."""
    rows = session.execute(
        select(WorkerModel, Worker.owner_id).join(Worker, Worker.id == WorkerModel.worker_id)
    ).all()
    evicted = [
        model for model, owner in rows if owner != keep_owner and claim_key(model.model_name) == key
    ]
    for model in evicted:
        session.delete(model)
    session.flush()
    return [model.worker_id for model in evicted]


def stamp_owner(payload: dict[str, Any], username: str) -> dict[str, Any]:
    """The payload with the owner the platform authenticated, not the one the worker claimed."""
    payload = copy.deepcopy(payload)
    permissions = payload["metadata"].get("permissions")
    permissions = dict(permissions) if isinstance(permissions, dict) else {}
    permissions["owner"] = username
    payload["metadata"]["permissions"] = permissions
    for resource in payload["resource_info"]:
        resource["model_owner"] = username
        resource["owned_by"] = username
    return payload


def stop(session: Session, *, caller: Caller, worker_id: str) -> Worker:
    worker = visible_worker(session, caller=caller, worker_id=worker_id)
    if worker.owner_id != caller.user_id and not caller.is_admin:
        raise PermissionDenied("only the worker's owner or an admin may stop it")
    worker.stopped = True
    return worker


def hold(session: Session, *, caller: Caller, worker_id: str, held: bool) -> Worker:
    """An admin's stop that sticks for this worker id (``held``), or letting it back. The same
    program started again under a new id is a new worker; stopping its owner's key or account
    is what keeps a person's workers out."""
    if not caller.is_admin:
        raise PermissionDenied("only an admin may hold a worker")
    worker = session.get(Worker, worker_id)
    if worker is None:
        raise NotFound(f"no worker {worker_id!r}")
    worker.held = held
    worker.stopped = worker.stopped or held
    return worker


def is_live(worker: Worker, *, now: float, expiry: float) -> bool:
    return not worker.stopped and now - worker.last_heartbeat < expiry


def visible_worker(session: Session, *, caller: Caller, worker_id: str) -> Worker:
    """A worker the caller may see (one serving a model it may call); else 404."""
    worker = session.get(Worker, worker_id)
    if worker is None:
        raise NotFound(f"no worker {worker_id!r}")
    grants = grants_for(session, (model.model_name for model in worker.models))
    if not can_see(caller, worker, grants):
        raise NotFound(f"no worker {worker_id!r}")
    return worker


def can_see(caller: Caller, worker: Worker, grants: Mapping[str, Grant]) -> bool:
    return any(
        may_call(caller, model, worker.owner_id, grants.get(model.model_name))
        for model in worker.models
    )


def live_workers(
    session: Session, *, caller: Caller, now: float, expiry: float
) -> Sequence[Worker]:
    workers = session.scalars(
        select(Worker).where(Worker.stopped.is_(False), Worker.last_heartbeat > now - expiry)
    ).all()
    grants = grants_for(session, (m.model_name for worker in workers for m in worker.models))
    return [worker for worker in workers if can_see(caller, worker, grants)]


def routes_for(
    session: Session, *, caller: Caller, model_name: str, now: float, expiry: float
) -> list[WorkerRoute] | None:
    """Live workers of the model the caller may call; None when the caller may not call it
    (or it does not exist), [] when it exists but no worker of it is live."""
    rows = session.execute(
        select(Worker, WorkerModel, ModelName.owner_id)
        .join(WorkerModel, WorkerModel.worker_id == Worker.id)
        .outerjoin(ModelName, ModelName.name == WorkerModel.model_name)
        .where(WorkerModel.model_name == model_name)
    ).all()
    grant = grants_for(session, [model_name]).get(model_name)
    return _routes(rows, grant, caller=caller, now=now, expiry=expiry)


def callable_models(
    session: Session, *, caller: Caller, now: float, expiry: float
) -> dict[str, list[WorkerRoute]]:
    """Every worker model the caller may call that has a live worker, with its live workers
    (routes_for for all of them at once)."""
    rows = session.execute(
        select(Worker, WorkerModel, ModelName.owner_id)
        .join(WorkerModel, WorkerModel.worker_id == Worker.id)
        .outerjoin(ModelName, ModelName.name == WorkerModel.model_name)
        .where(Worker.stopped.is_(False), Worker.last_heartbeat > now - expiry)
    ).all()
    by_model: dict[str, list[Any]] = {}
    for row in rows:
        by_model.setdefault(row[1].model_name, []).append(row)
    grants = grants_for(session, by_model)
    found = {}
    for name, model_rows in sorted(by_model.items()):
        if routes := _routes(model_rows, grants.get(name), caller=caller, now=now, expiry=expiry):
            found[name] = routes
    return found


def _routes(
    rows: Sequence[Any], grant: Grant | None, *, caller: Caller, now: float, expiry: float
) -> list[WorkerRoute] | None:
    # Only the name's holder's workers: a call, and the file grant it carries, never reaches
    # a worker whose owner does not hold the name (one left over from before a takeover).
    permitted = [
        (w, m)
        for w, m, holder in rows
        if holder == w.owner_id and may_call(caller, m, w.owner_id, grant)
    ]
    if not permitted:
        return None
    routes = []
    for w, m in permitted:
        if not is_live(w, now=now, expiry=expiry):
            continue
        try:
            address = parse_address(w.address)
        except InvalidRequest:
            log.warning("worker %s has an address the platform no longer calls; skipped", w.id)
            continue
        routes.append(
            WorkerRoute(
                w.id,
                address,
                w.priority,
                w.weight,
                w.speed,
                w.queue_length,
                tuple(m.functions),
                trusted=w.owner.is_admin,
            )
        )
    return routes


def worker_for_model(
    session: Session,
    *,
    caller: Caller,
    model_name: str,
    now: float,
    expiry: float,
    load: Callable[[WorkerRoute], float],
) -> Worker:
    """The live worker that best answers get_worker_info(model_name=…)."""
    routes = routes_for(session, caller=caller, model_name=model_name, now=now, expiry=expiry)
    if not routes:
        raise NotFound(f"no live worker serves model {model_name!r}")
    worker = session.get(Worker, best(routes, load).worker_id)
    assert worker is not None
    return worker


def info_for(worker: Worker, *, caller: Caller, only_model: str | None = None) -> dict[str, Any]:
    """The WorkerInfo the SDK reads: the worker's own address only for its owner and admins."""
    info = copy.deepcopy(worker.info)
    info["last_heartbeat"] = int(worker.last_heartbeat)
    info.setdefault("status_info", {})["status"] = worker.status
    if only_model is not None:
        info["resource_info"] = [
            r for r in info["resource_info"] if r.get("model_name") == only_model
        ]
    if worker.owner_id != caller.user_id and not caller.is_admin:
        info["network_info"] = {**info.get("network_info", {}), "host": "", "worker_address": ""}
    return info


def model_cards(
    session: Session, *, caller: Caller, now: float, expiry: float
) -> list[dict[str, Any]]:
    """/models rows for the live worker models the caller may call; owners as a list, as the
    platform's tool rows carry them."""
    cards: dict[str, dict[str, Any]] = {}
    workers = live_workers(session, caller=caller, now=now, expiry=expiry)
    grants = grants_for(session, (m.model_name for worker in workers for m in worker.models))
    for worker in workers:
        owner = worker.owner.email or worker.owner.username
        for model in worker.models:
            if not may_call(caller, model, worker.owner_id, grants.get(model.model_name)):
                continue
            card = cards.setdefault(
                model.model_name,
                {
                    "id": model.model_name,
                    "object": "model",
                    "created": int(worker.created_at.timestamp()),
                    "owned_by": [],
                },
            )
            if owner not in card["owned_by"]:
                card["owned_by"].append(owner)
    return list(cards.values())


@dataclass(frozen=True, slots=True)
class WorkerModelStatus:
    """One worker model a caller may call, with how its workers are doing."""

    name: str
    functions: tuple[str, ...]
    live_workers: int
    queue_length: int


def worker_model_statuses(
    session: Session, *, caller: Caller, now: float, expiry: float
) -> list[WorkerModelStatus]:
    """Every worker model the caller may call, live or not (the portal shows both)."""
    rows = session.execute(
        select(Worker, WorkerModel)
        .join(WorkerModel, WorkerModel.worker_id == Worker.id)
        .where(Worker.stopped.is_(False))
    ).all()
    found: dict[str, list[tuple[Worker, WorkerModel]]] = {}
    grants = grants_for(session, (model.model_name for _worker, model in rows))
    for worker, model in rows:
        if may_call(caller, model, worker.owner_id, grants.get(model.model_name)):
            found.setdefault(model.model_name, []).append((worker, model))
    statuses = []
    for name, pairs in sorted(found.items()):
        live = [w for w, _ in pairs if is_live(w, now=now, expiry=expiry)]
        statuses.append(
            WorkerModelStatus(
                name=name,
                functions=tuple(sorted({f for _, m in pairs for f in m.functions})),
                live_workers=len(live),
                queue_length=sum(w.queue_length for w in live),
            )
        )
    return statuses


def all_workers(session: Session) -> Sequence[Worker]:
    """Every worker, the ones serving now first (the admin's view)."""
    return session.scalars(
        select(Worker).order_by(Worker.stopped, Worker.last_heartbeat.desc())
    ).all()
