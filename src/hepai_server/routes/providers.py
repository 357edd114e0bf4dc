"""The admins' view of the providers: each one's last health check, and the deployments that
are cooling down after failing (``GET /providers/health``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.governance import ProviderHealth
from hepai_server.errors import PermissionDenied
from hepai_server.routes.http import authenticate, json_response


async def provider_health(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    if not caller.is_admin:
        raise PermissionDenied("only an admin may see the providers' health")

    def work(session: Session) -> list[dict[str, Any]]:
        return [
            {
                "provider": row.provider,
                "ok": row.ok,
                "down": row.down,
                "status": row.status,
                "latency_ms": round(row.latency_ms, 1),
                "detail": row.detail,
                "checked_at": row.checked_at.isoformat(),
            }
            for row in session.scalars(select(ProviderHealth).order_by(ProviderHealth.provider))
        ]

    return json_response(
        {
            "object": "list",
            "data": await gateway.transact(work),
            "cooling_down": {
                name: round(left, 1) for name, left in gateway.upstreams.breaker.cooling().items()
            },
        }
    )
