"""The usage page and its CSV export: requests and tokens per day stacked by model, per model,
per key, the request log; for admins, every account's, the top users and groups.

Everyone sees their own usage; admins see every account's and may narrow it to one user,
group or model. Days are UTC days (the daily totals are kept per UTC day); times of single
requests are the viewer's.
"""

from __future__ import annotations

import csv
import io
from dataclasses import astuple, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.tables import User
from hepai_server.portal.charts import stacked_chart, top_series
from hepai_server.portal.web import Portal, Viewer, gateway
from hepai_server.services import accounts, usage_log, usage_report
from hepai_server.services.usage_report import Report, Totals, UsageFilter

SPANS = (7, 30, 90, 365)
DEFAULT_SPAN = 30
#: The longest custom range, in days.
LONGEST = 366
LOG_SIZE = 50
#: Longer spans are drawn a week a column.
WEEKLY_AFTER = 92


def parse_day(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw) if raw and len(raw) == 10 else None
    except ValueError:
        return None


def usage_filter(
    request: Request, viewer: Viewer, session: Session
) -> tuple[UsageFilter, dict[str, Any]]:
    """The report the query string asks for, within what the viewer may see: the last N days,
    or a custom range of days (at most a year, never past today)."""
    query = request.query_params
    today = datetime.now(UTC).date()
    first, last = parse_day(query.get("from", "")), parse_day(query.get("to", ""))
    custom = first is not None and last is not None
    span = int(query["days"]) if query.get("days", "").isdigit() else DEFAULT_SPAN
    span = span if span in SPANS else DEFAULT_SPAN
    if first is not None and last is not None:
        last = min(last, today)
        first = max(min(first, last), last - timedelta(days=LONGEST - 1))
    else:
        first, last = today - timedelta(days=span - 1), today
    chosen: dict[str, Any] = {
        "days": span,
        "custom": custom,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "user": "",
        "group": "",
        "model": "",
        "errors": query.get("errors") == "1",
    }
    user_id: int | None = viewer.user_id
    group = None
    if viewer.is_admin:
        username = query.get("user", "").strip()[:128]
        user_id = None
        if username:
            user_id = session.scalar(select(User.id).where(User.username == username)) or -1
            chosen["user"] = username
        group = query.get("group", "").strip()[:128] or None
        chosen["group"] = group or ""
    model = query.get("model", "").strip()[:256] or None
    chosen["model"] = model or ""
    report = UsageFilter(first_day=first, last_day=last, user_id=user_id, group=group, model=model)
    return report, chosen


def charts(result: Report, t: Any) -> dict[str, Any]:
    """Requests and tokens per day, each stacked by the models used most (the same models in
    the same colours in both); past three months, per week (ending today), which a screen can
    show and a page can send."""
    days = [day.isoformat() for day, _totals in result.per_day]
    weekly = len(days) > WEEKLY_AFTER
    spans = [days[max(0, end - 6) : end + 1] for end in range(len(days) - 1, -1, -7)][::-1]
    spans = spans if weekly else [[day] for day in days]
    labels = [span[0] if len(span) == 1 else f"{span[0]} … {span[-1]}" for span in spans]
    # By date, not its text: a year of every account has 7,300 day-model cells to place.
    column = {
        date.fromisoformat(day): label
        for span, label in zip(spans, labels, strict=True)
        for day in span
    }
    other = t("usage.other_models")
    # Ranked by tokens; a model with requests and no tokens (a tool) still gets its colour.
    weights = {model: totals.total_tokens + totals.requests for model, totals in result.per_model}
    series = top_series(weights, other)
    made: dict[str, Any] = {"per_week": weekly}
    for name, position in (("requests", 0), ("tokens", 1)):
        values: dict[tuple[str, str], int] = {}
        for (day, model), counts in result.day_model.items():
            key = (column[day], model)
            values[key] = values.get(key, 0) + counts[position]
        made[name] = stacked_chart(
            labels,
            values,
            series,
            other=other,
            total_label=t("usage.total"),
            short=[span[0][5:] for span in spans],
        )
    return made


async def usage_page(request: Request, portal: Portal) -> Response:
    """The overview, or for admins looking at every account, the users-and-groups view (each
    view reads the daily totals once)."""
    viewer = await portal.viewer(request)
    t = portal.translator(request)
    before = request.query_params.get("before", "")

    def work(session: Session) -> dict[str, Any]:
        chosen_filter, chosen = usage_filter(request, viewer, session)
        everyone = viewer.is_admin and chosen_filter.user_id is None
        common = {
            "chosen": chosen,
            "everyone": everyone,
            "groups": [g.name for g in accounts.list_groups(session)] if viewer.is_admin else [],
        }
        if everyone and request.query_params.get("view") == "people":
            return {**common, "view": "people", **people(session, chosen_filter)}
        before_id = int(before) if before.isdigit() and len(before) < 19 else None
        found = overview(session, chosen_filter, errors_only=chosen["errors"], before_id=before_id)
        return {**common, "view": "overview", **found, **charts(found["result"], t)}

    context = await gateway(request).transact(work)
    return portal.render(request, "usage.html", viewer=viewer, spans=SPANS, **context)


def overview(
    session: Session, report: UsageFilter, *, errors_only: bool, before_id: int | None
) -> dict[str, Any]:
    """Totals, per model and per key, and the request log."""
    result = usage_report.report(session, report)
    if report.model:
        choices = usage_report.models_used(session, replace(report, model=None))
    else:
        choices = sorted(model for model, _totals in result.per_model)
    since = datetime.combine(report.first_day, time(), UTC)
    until = datetime.combine(report.last_day + timedelta(days=1), time(), UTC)
    one_user = report.user_id
    log, more = usage_log.latest(
        session, user_id=one_user, errors_only=errors_only, before_id=before_id, limit=LOG_SIZE
    )
    return {
        "result": result,
        "overall": result.overall,
        "models": result.per_model,
        "model_choices": choices,
        "keys": usage_log.per_key(session, user_id=one_user, since=since, until=until)
        if one_user is not None and one_user > 0
        else [],
        "log": log,
        "more": more,
    }


def people(session: Session, report: UsageFilter) -> dict[str, Any]:
    """For admins looking at every account: the top users and groups, and the totals."""
    per_account = usage_report.per_account(session, report)
    columns = zip(*(astuple(totals) for totals in per_account.values()), strict=True)
    sums = [sum(column) for column in columns]
    return {
        "overall": Totals(*sums) if sums else Totals(),
        "model_choices": [report.model] if report.model else [],
        "top_users": usage_report.per_user(session, per_account),
        "top_groups": usage_report.per_group(session, per_account),
    }


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
        # Only the names are text a spreadsheet could take for a formula; days and counts
        # are not (and a quarter of every account is tens of thousands of lines).
        writer.writerows(
            (day, spreadsheet_safe(user), spreadsheet_safe(model), *counts)
            for day, user, model, *counts in usage_report.detail_rows(session, report)
        )
        return out.getvalue()

    body = await gateway(request).transact(work)
    filename = f"hepai-usage-{datetime.now(UTC).date().isoformat()}.csv"
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )
