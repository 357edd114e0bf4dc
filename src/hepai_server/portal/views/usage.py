"""The usage page and its CSV export: requests and tokens per day and per model.

Everyone sees their own usage; admins see every account's and may narrow it to one user,
group or model.
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.tables import User
from hepai_server.portal.charts import bar_chart
from hepai_server.portal.web import Portal, Viewer, gateway
from hepai_server.services import accounts, usage_report
from hepai_server.services.usage_report import UsageFilter

SPANS = (7, 30, 90, 365)
DEFAULT_SPAN = 30


def usage_filter(
    request: Request, viewer: Viewer, session: Session
) -> tuple[UsageFilter, dict[str, Any]]:
    """The report the query string asks for, within what the viewer may see."""
    query = request.query_params
    try:
        span = int(query.get("days", DEFAULT_SPAN))
    except ValueError:
        span = DEFAULT_SPAN
    span = span if span in SPANS else DEFAULT_SPAN
    today = datetime.now(UTC).date()
    chosen: dict[str, Any] = {"days": span, "user": "", "group": "", "model": ""}
    user_id: int | None = viewer.user_id
    group = None
    if viewer.is_admin:
        username = query.get("user", "").strip()
        user_id = None
        if username:
            user_id = session.scalar(select(User.id).where(User.username == username)) or -1
            chosen["user"] = username
        group = query.get("group", "").strip() or None
        chosen["group"] = group or ""
    model = query.get("model", "").strip()[:256] or None
    chosen["model"] = model or ""
    report = UsageFilter(
        first_day=today - timedelta(days=span - 1),
        last_day=today,
        user_id=user_id,
        group=group,
        model=model,
    )
    return report, chosen


async def usage_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)

    def work(session: Session) -> dict[str, Any]:
        chosen_filter, chosen = usage_filter(request, viewer, session)
        result = usage_report.report(session, chosen_filter)
        if chosen_filter.model:
            unfiltered = replace(chosen_filter, model=None)
            choices = usage_report.models_used(session, unfiltered)
        else:
            choices = sorted(model for model, _totals in result.per_model)
        days = result.per_day
        top = result.per_model[:12]
        return {
            "chosen": chosen,
            "overall": result.overall,
            "requests_chart": bar_chart(
                [(d.isoformat(), t.requests) for d, t in days], short=month_day
            ),
            "tokens_chart": bar_chart(
                [(d.isoformat(), t.total_tokens) for d, t in days], short=month_day
            ),
            "model_requests_chart": bar_chart(
                [(model, t.requests) for model, t in top], short=model_tick, max_labels=12
            ),
            "model_tokens_chart": bar_chart(
                [(model, t.total_tokens) for model, t in top], short=model_tick, max_labels=12
            ),
            "models": result.per_model,
            "model_choices": choices,
            "groups": [g.name for g in accounts.list_groups(session)] if viewer.is_admin else [],
        }

    context = await gateway(request).transact(work)
    return portal.render(request, "usage.html", viewer=viewer, spans=SPANS, **context)


def month_day(day: str) -> str:
    return day[5:]


def model_tick(model: str) -> str:
    """A model id short enough to stand under its bar: its last part, cut to 14 characters."""
    name = model.rsplit("/", 1)[-1]
    return name if len(name) <= 14 else name[:13] + "…"


def spreadsheet_safe(value: object) -> object:
    """A text cell a spreadsheet would run as a formula (a worker may name its model
    ``=HYPERLINK(…)``) is kept as text by a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


async def usage_csv(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)

    def work(session: Session) -> str:
        report, _chosen = usage_filter(request, viewer, session)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["day", "user", "model", *usage_report.COUNTERS])
        for row in usage_report.detail_rows(session, report):
            writer.writerow([spreadsheet_safe(value) for value in row])
        return out.getvalue()

    body = await gateway(request).transact(work)
    filename = f"hepai-usage-{datetime.now(UTC).date().isoformat()}.csv"
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )
