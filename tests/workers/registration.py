"""A worker's registration body, shaped like the hepai SDK's, for tests that register by hand."""

from __future__ import annotations

from typing import Any


def worker_info(
    name: str,
    worker_id: str,
    *,
    address: str = "http://127.0.0.1:9/apiv2",
    groups: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A registration body shaped like the SDK's (plus ``extra`` top-level keys)."""
    return {
        "id": worker_id,
        "type": "common",
        "network_info": {
            "host": "127.0.0.1",
            "port": 9,
            "route_prefix": "/apiv2",
            "host_name": "test",
            "worker_address": address,
        },
        "resource_info": [
            {
                "model_name": name,
                "model_type": "common",
                "model_groups": groups or [],
                "model_users": [],
                "model_functions": ["__call__", "add"],
                "id": "md-x",
                "object": "model",
                "owned_by": "someone-else",
            }
        ],
        "status_info": {"speed": 1, "queue_length": 0, "status": "ready", "start_time": 1.0},
        "check_heartbeat": True,
        "last_heartbeat": None,
        "version": "2.0",
        "metadata": {"permissions": {"groups": groups or [], "owner": "someone-else"}},
        **extra,
    }
