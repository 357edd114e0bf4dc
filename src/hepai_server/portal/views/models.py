"""The model catalogue: what this account may use, by type, with what each model can do and
how it is doing; one model's page with code to call it (curl, openai, hepai)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.governance import ProviderHealth
from hepai_server.errors import NotFound
from hepai_server.gateway import registry
from hepai_server.gateway.runtime import Gateway
from hepai_server.governance.prices import TOKEN_PRICES, Price, format_money
from hepai_server.portal.snippets import for_model
from hepai_server.portal.web import Portal, gateway
from hepai_server.services import usage_log
from hepai_server.services.accounts import Caller

#: The order model types are shown in; worker models that serve none of these are tools.
TYPES = ("chat", "completion", "embedding", "rerank", "audio", "tts", "image", "tool")
#: Which worker method makes a worker model which type (wire spec §2.10).
WORKER_TYPES = (
    ("chat_completions", "chat"),
    ("embeddings", "embedding"),
    ("rerank", "rerank"),
)
#: How far back a model's calls tell how it is doing.
HEALTH_WINDOW = timedelta(minutes=15)
#: Every status a model may show (the catalog test checks both languages name them).
STATUSES = ("ok", "degraded", "failing", "idle", "live", "offline")


@dataclass(frozen=True, slots=True)
class ModelRow:
    id: str
    type: str
    #: The provider's name, or "workers" for models served by DDF workers.
    provider: str
    #: Provider models: ok, degraded, failing (their recent calls) or idle (none lately);
    #: worker models: live or offline.
    status: str
    live_workers: int = 0
    queue_length: int = 0
    context_length: int | None = None
    capabilities: tuple[str, ...] = ()
    #: Calls in the health window, and how many the upstream failed.
    recent_calls: int = 0
    recent_failures: int = 0


async def available_models(
    gw: Gateway,
    caller: Caller,
    *,
    health: dict[str, tuple[int, int]] | None = None,
    down: frozenset[str] = frozenset(),
) -> list[ModelRow]:
    """Every model the caller may use: the providers', then the workers' (live or not).
    ``health`` is each model's recent calls and failures; ``down`` the providers the last
    health check found down: a model none of whose providers is up is failing."""
    health = health or {}
    rows = []
    for model in gw.catalog.visible_to(caller):
        calls, failed = health.get(model.id, (0, 0))
        providers = {deployment.provider for deployment in model.deployments}
        state = "failing" if providers <= down else usage_log.health_of(calls, failed)
        rows.append(
            ModelRow(
                model.id,
                model.type,
                model.owned_by,
                state,
                context_length=model.context_length,
                capabilities=tuple(sorted(model.capabilities)),
                recent_calls=calls,
                recent_failures=failed,
            )
        )
    expiry = gw.settings.worker_expiry_seconds
    statuses = await gw.transact(
        lambda s: registry.worker_model_statuses(s, caller=caller, now=time.time(), expiry=expiry)
    )
    for status in statuses:
        kind = next((t for f, t in WORKER_TYPES if f in status.functions), "tool")
        rows.append(
            ModelRow(
                status.name,
                kind,
                "workers",
                "live" if status.live_workers else "offline",
                status.live_workers,
                status.queue_length,
            )
        )
    return sorted(rows, key=lambda row: (TYPES.index(row.type), row.provider, row.id))


async def catalogue(gw: Gateway, caller: Caller) -> list[ModelRow]:
    """The caller's models with how their calls of the last minutes went, and what the
    providers' health checks found."""
    since = datetime.now(UTC) - HEALTH_WINDOW

    def work(session: Session) -> tuple[dict[str, tuple[int, int]], frozenset[str]]:
        down = session.scalars(select(ProviderHealth.provider).where(ProviderHealth.down))
        return usage_log.recent_health(session, since=since), frozenset(down)

    health, down = await gw.transact(work)
    return await available_models(gw, caller, health=health, down=down)


async def models_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    rows = await catalogue(gateway(request), viewer.caller())
    kinds = [kind for kind in TYPES if any(row.type == kind for row in rows)]
    chosen = request.query_params.get("type", "")
    text = request.query_params.get("q", "").strip().lower()[:256]
    shown = [
        row
        for row in rows
        if (not chosen or row.type == chosen) and (not text or text in row.id.lower())
    ]
    sections = [(kind, list(group)) for kind, group in groupby(shown, key=lambda row: row.type)]
    return portal.render(
        request,
        "models.html",
        viewer=viewer,
        sections=sections,
        kinds=kinds,
        chosen=chosen if chosen in kinds else "",
        q=text,
        total=len(rows),
    )


async def model_page(request: Request, portal: Portal) -> Response:
    """One model: its facts, and code to call it in three tabs."""
    viewer = await portal.viewer(request)
    model_id = request.path_params["model_id"]
    rows = await catalogue(gateway(request), viewer.caller())
    model = next((row for row in rows if row.id == model_id), None)
    if model is None:
        raise NotFound(f"no model {model_id!r}")
    price = gateway(request).limiter.prices.get(model.id)
    return portal.render(
        request,
        "model.html",
        viewer=viewer,
        model=model,
        prices=price_lines(price) if price is not None else [],
        snippets=for_model(model.id, model.type, portal.base_url(request)),
    )


def price_lines(price: Price) -> list[tuple[str, str]]:
    """The model's prices as the page lists them: (message key, amount), the token prices per
    million tokens; input and output when they cost something, the prices that default to
    them (cached input, reasoning, embedding) when set."""
    lines = []
    for name in TOKEN_PRICES:
        nanos = getattr(price, name)
        if nanos is not None and (nanos or name not in ("input", "output")):
            lines.append((f"models.price_{name}", format_money(nanos * 1_000_000)))
    for name in ("per_page", "per_call"):
        if getattr(price, name):
            lines.append((f"models.price_{name}", format_money(getattr(price, name))))
    return lines
