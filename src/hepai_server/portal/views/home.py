"""The home page: my usage today and this month, my keys, the models I use most, my recent
errors; and until I have a key, the first steps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.portal.snippets import for_model
from hepai_server.portal.views.models import available_models
from hepai_server.portal.web import Portal, gateway
from hepai_server.services import accounts, usage_log, usage_report
from hepai_server.services.usage_report import UsageFilter


async def home(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    today = datetime.now(UTC).date()

    def work(session: Session) -> dict[str, Any]:
        owner = accounts.get_user_by_id(session, viewer.user_id)
        keys = [key for key in accounts.list_api_keys(session, user=owner) if not key.revoked_at]
        month = usage_report.report(
            session,
            UsageFilter(first_day=today.replace(day=1), last_day=today, user_id=viewer.user_id),
        )
        errors, _more = usage_log.latest(session, user_id=viewer.user_id, errors_only=True, limit=5)
        return {
            "keys": sorted(keys, key=lambda key: -key.id)[:5],
            "key_count": len(keys),
            "today": month.per_day[-1][1],
            "month": month.overall,
            "top_models": month.per_model[:5],
            "errors": errors,
        }

    gw = gateway(request)
    context = await gw.transact(work)
    models = await available_models(gw, viewer.caller())
    first = next((m for m in models if m.type == "chat" and m.status != "offline"), None)
    return portal.render(
        request,
        "home.html",
        viewer=viewer,
        model_count=len(models),
        first_model=first,
        snippets=for_model(first.id, first.type, portal.base_url(request)) if first else [],
        **context,
    )
