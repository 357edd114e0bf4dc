"""The models page: what this account may use, by provider and type, with snippets to call it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import groupby

from starlette.requests import Request
from starlette.responses import Response

from hepai_server.gateway import registry
from hepai_server.gateway.runtime import Gateway
from hepai_server.portal.web import Portal, gateway, redirect
from hepai_server.services.accounts import Caller

#: The order model types are shown in; worker models that serve none of these are tools.
TYPES = ("chat", "completion", "embedding", "rerank", "audio", "tts", "image", "tool")
#: Which worker method makes a worker model which type (wire spec §2.10).
WORKER_TYPES = (
    ("chat_completions", "chat"),
    ("embeddings", "embedding"),
    ("rerank", "rerank"),
)


@dataclass(frozen=True, slots=True)
class ModelRow:
    id: str
    type: str
    #: The provider's name, or "workers" for models served by DDF workers.
    provider: str
    #: "ready" for provider models; for worker models "live" or "offline".
    status: str
    live_workers: int = 0
    queue_length: int = 0


async def available_models(gw: Gateway, caller: Caller) -> list[ModelRow]:
    """Every model the caller may use: the providers', then the workers' (live or not)."""
    rows = [
        ModelRow(model.id, model.type, model.owned_by, "ready")
        for model in gw.catalog.visible_to(caller)
    ]
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


async def models_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    rows = await available_models(gateway(request), viewer.caller())
    sections = [(kind, list(group)) for kind, group in groupby(rows, key=lambda row: row.type)]
    return portal.render(request, "models.html", viewer=viewer, sections=sections)


async def home(request: Request, portal: Portal) -> Response:
    """The landing page is the models page; signing in comes first."""
    await portal.viewer(request)
    return redirect("/models")
