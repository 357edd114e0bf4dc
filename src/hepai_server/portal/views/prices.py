"""Admin → prices: every model's price in force (the providers file's, or one set here), and one
model's page to set or clear its price.

A price set here replaces the providers file's for that model, for calls that end from then on
(a usage row keeps the cost it was written with). Every change is audited and reaches every
process: this one at once, the others through the catalog's generation (and Redis).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.governance import ModelPrice
from hepai_server.db.tables import ModelName
from hepai_server.errors import InvalidRequest, NotFound
from hepai_server.governance import store
from hepai_server.governance.prices import TOKEN_PRICES, UNIT_PRICES, Price, parse_price
from hepai_server.portal.notices import describe
from hepai_server.portal.views.admin import page_number
from hepai_server.portal.views.models import available_models, price_lines
from hepai_server.portal.views.providers import changed
from hepai_server.portal.web import Portal, Viewer, done, gateway, record_action
from hepai_server.services.directory import Page

FIELDS = (*TOKEN_PRICES, *UNIT_PRICES)
PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class PricedModel:
    """A model as the prices page lists it."""

    id: str
    #: The catalogue's type, "tool" for a worker model, "" for a model not served now.
    type: str
    price: Price | None
    #: "here" (set by an admin), "file" (the providers file's) or "" (not priced).
    source: str
    stored: ModelPrice | None = None

    @property
    def lines(self) -> list[tuple[str, str]]:
        return price_lines(self.price) if self.price is not None else []


async def every_priced_model(request: Request, viewer: Viewer) -> list[PricedModel]:
    """The catalogue's models, the workers', and any other model a price was set for."""
    gw = gateway(request)
    configured = store.config_prices(gw.config_providers)
    stored = {
        row.model_id: row for row in await gw.transact(lambda s: list(store.stored_prices(s)))
    }
    types = {row.id: row.type for row in await available_models(gw, viewer.caller())}
    found = []
    for model_id in sorted(types.keys() | stored.keys()):
        row = stored.get(model_id)
        price = store.price_of(row) if row is not None else configured.get(model_id)
        source = "here" if row is not None else "file" if price is not None else ""
        found.append(PricedModel(model_id, types.get(model_id, ""), price, source, row))
    return found


async def prices_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    text = request.query_params.get("q", "").strip()[:256]
    models = [
        model
        for model in await every_priced_model(request, viewer)
        if text.lower() in model.id.lower()
    ]
    number = max(1, min(page_number(request), -(-len(models) // PAGE_SIZE) or 1))
    start = (number - 1) * PAGE_SIZE
    found = Page(models[start : start + PAGE_SIZE], len(models), number, PAGE_SIZE)
    return portal.render(request, "admin_prices.html", viewer=viewer, found=found, q=text)


async def known_model(request: Request, viewer: Viewer, model_id: str) -> PricedModel:
    """The model, if the catalogue, the workers or a set price know it; else 404."""
    gw = gateway(request)
    if model_id in gw.catalog.ids() or await gw.transact(
        lambda s: s.get(ModelName, model_id) is not None or s.get(ModelPrice, model_id) is not None
    ):
        found = await every_priced_model(request, viewer)
        return next(model for model in found if model.id == model_id)
    raise NotFound(f"no model {model_id!r}", param="model")


async def price_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request, admin=True)
    model = await known_model(request, viewer, request.path_params["model_id"])
    return render_price(request, portal, viewer, model)


def render_price(
    request: Request,
    portal: Portal,
    viewer: Viewer,
    model: PricedModel,
    *,
    typed: dict[str, str] | None = None,
    error: str | None = None,
    detail: str | None = None,
) -> Response:
    """The model's price form: what was typed after a refusal, else the price in force (so
    the providers file's is the starting point of one set here)."""
    written: dict[str, Any] = model.price.as_written() if model.price is not None else {}
    shown = typed or {name: plain(written.get(name)) for name in FIELDS}
    return portal.render(
        request,
        "admin_price.html",
        viewer=viewer,
        model=model,
        fields=FIELDS,
        typed=shown,
        error=error,
        detail=detail,
        status=400 if error else 200,
    )


def plain(value: str | None) -> str:
    """A written price for a form field: empty for none or zero (the form's "not charged")."""
    return "" if value in (None, "0") else str(value)


def typed_price(form: FormData) -> dict[str, str]:
    return {name: str(form.get(name) or "").strip()[:32] for name in FIELDS}


async def change_price(request: Request, portal: Portal) -> Response:
    """Set the model's price from the form, or clear the one set here."""
    viewer = await portal.viewer(request, admin=True)
    form = await portal.form(request, viewer)
    model = await known_model(request, viewer, request.path_params["model_id"])
    clear = form.get("action") == "clear"
    typed = typed_price(form)
    gw = gateway(request)

    def work(session: Session) -> None:
        if clear:
            store.clear_price(session, model_id=model.id)
            record_action(session, viewer, request, "price.clear", model.id)
            return
        price = parse_price({name: value for name, value in typed.items() if value})
        store.set_price(
            session, model_id=model.id, price=price, now=datetime.now(UTC), by=viewer.username
        )
        detail = {"price": price.as_written(), "currency": portal.settings.currency}
        record_action(session, viewer, request, "price.set", model.id, detail)

    try:
        await gw.transact(work)
    except (InvalidRequest, NotFound) as error:
        return render_price(
            request, portal, viewer, model, typed=typed, error=describe(error), detail=error.message
        )
    await changed(request)
    message = "prices.cleared" if clear else "prices.saved"
    target = "/admin/prices/" + quote(model.id, safe="/")
    return await done(request, viewer, target, message, name=model.id)
