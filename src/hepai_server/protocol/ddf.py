"""DDF wire formats: the worker payloads the hepai SDK's strict dataclasses accept.

The SDK builds ``WorkerInfo(**json)`` and its nested dataclasses the same way, so any key it does
not declare crashes the client. Every payload the platform returns about a worker goes through
``worker_info_payload``, which keeps exactly the declared keys (and never ``secret_key``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hepai_server.errors import InvalidRequest

NETWORK_KEYS = frozenset({"host", "port", "route_prefix", "host_name", "worker_address"})
RESOURCE_KEYS = frozenset(
    {
        "model_name",
        "model_type",
        "model_version",
        "model_description",
        "model_author",
        "model_owner",
        "model_groups",
        "model_users",
        "model_functions",
        "id",
        "created",
        "object",
        "owned_by",
    }
)
STATUS_KEYS = frozenset({"speed", "queue_length", "status", "start_time"})
WORKER_KEYS = frozenset(
    {
        "id",
        "type",
        "network_info",
        "resource_info",
        "status_info",
        "check_heartbeat",
        "last_heartbeat",
        "version",
        "metadata",
        "is_shared",
        "owner",
        "shared_groups",
        "shared_users",
    }
)
STATUSES = frozenset({"idle", "ready", "busy", "error"})
MAX_WORKER_ID = 128


@dataclass(frozen=True, slots=True)
class Registration:
    """What the controller needs from a register_worker body, checked."""

    worker_id: str
    address: str
    models: tuple[str, ...]
    priority: int
    weight: float
    speed: float
    queue_length: int
    status: str
    #: The body as the SDK will read it back: declared keys only, no secret.
    payload: dict[str, Any]


def _pick(value: Any, keys: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k in keys} if isinstance(value, dict) else {}


def worker_info_payload(info: dict[str, Any]) -> dict[str, Any]:
    """A WorkerInfo dict with only the keys the SDK declares, at every level."""
    payload = _pick(info, WORKER_KEYS)
    if "network_info" in payload:
        payload["network_info"] = _pick(payload["network_info"], NETWORK_KEYS)
    if "status_info" in payload:
        payload["status_info"] = _pick(payload["status_info"], STATUS_KEYS)
    resources = payload.get("resource_info")
    payload["resource_info"] = (
        [_pick(r, RESOURCE_KEYS) for r in resources if isinstance(r, dict)]
        if isinstance(resources, list)
        else []
    )
    if not isinstance(payload.get("metadata"), dict):
        payload["metadata"] = {}
    return payload


def parse_registration(body: Any) -> Registration:
    """Check a register_worker body (the SDK's full WorkerInfo plus ``secret_key``)."""
    if not isinstance(body, dict):
        raise InvalidRequest("the worker info must be a JSON object")
    worker_id = body.get("id")
    if not isinstance(worker_id, str) or not 0 < len(worker_id) <= MAX_WORKER_ID:
        raise InvalidRequest("'id' must be a worker id of 1-128 characters", param="id")
    payload = worker_info_payload(body)
    address = payload.get("network_info", {}).get("worker_address")
    if not isinstance(address, str) or not address.startswith(("http://", "https://")):
        raise InvalidRequest(
            "'worker_address' must be an http(s) URL", param="network_info.worker_address"
        )
    models = []
    for resource in payload["resource_info"]:
        name = resource.get("model_name")
        if not isinstance(name, str) or not name or len(name) > 256 or not name.isprintable():
            raise InvalidRequest(
                "every resource needs a printable model_name", param="resource_info"
            )
        functions = resource.get("model_functions")
        if not isinstance(functions, list) or not all(isinstance(f, str) for f in functions):
            raise InvalidRequest("model_functions must be a list of names", param="resource_info")
        models.append(name)
    if not models:
        raise InvalidRequest("a worker must serve at least one model", param="resource_info")
    if len(set(models)) != len(models):
        raise InvalidRequest("a worker lists each model once", param="resource_info")
    metadata, status = payload["metadata"], payload.get("status_info", {})
    return Registration(
        worker_id=worker_id,
        address=address.rstrip("/"),
        models=tuple(models),
        priority=_number(metadata.get("priority"), int, 0),
        weight=max(_number(metadata.get("weight"), float, 1.0), 0.0),
        speed=max(_number(status.get("speed"), float, 1.0), 0.001),
        queue_length=max(_number(status.get("queue_length"), int, 0), 0),
        status=status.get("status") if status.get("status") in STATUSES else "ready",
        payload=payload,
    )


def _number(value: Any, kind: type, default: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return kind(value)


def permissions_of(resource: dict[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    """The groups and users a worker model is shared with (its owner always may call it)."""
    groups = resource.get("model_groups") or []
    users = resource.get("model_users") or []
    return (
        frozenset(g for g in groups if isinstance(g, str)),
        frozenset(u for u in users if isinstance(u, str)),
    )
