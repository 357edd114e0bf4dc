"""Governance in the database: prices admins set, and loading every price, budget and rate
limit into the snapshots the gateway reads (with the catalog, on every process)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hepai_server.config import ProviderConfig, Settings
from hepai_server.db.governance import Budget, ModelPrice, RateLimit
from hepai_server.db.tables import Group
from hepai_server.errors import NotFound
from hepai_server.governance import budgets, limits
from hepai_server.governance.limits import RateRule
from hepai_server.governance.prices import Price, PriceBook, parse_price
from hepai_server.governance.rules import Rules

PRICE_FIELDS = ("input", "cached_input", "output", "reasoning", "embedding", "per_page", "per_call")


def set_price(
    session: Session, *, model_id: str, price: Price, now: datetime, by: str | None
) -> ModelPrice:
    """Set a model's price (replacing the providers file's), for requests that end from now."""
    row = session.get(ModelPrice, model_id)
    if row is None:
        row = ModelPrice(model_id=model_id)
        session.add(row)
    for name in PRICE_FIELDS:
        setattr(row, name, getattr(price, name))
    row.updated_at, row.updated_by = now, by
    session.flush()
    return row


def clear_price(session: Session, *, model_id: str) -> None:
    if not session.execute(delete(ModelPrice).where(ModelPrice.model_id == model_id)).rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"no price set for {model_id!r}")


def stored_prices(session: Session) -> Sequence[ModelPrice]:
    return session.scalars(select(ModelPrice).order_by(ModelPrice.model_id)).all()


def price_of(row: ModelPrice) -> Price:
    return Price(
        input=row.input or 0,
        cached_input=row.cached_input,
        output=row.output or 0,
        reasoning=row.reasoning,
        embedding=row.embedding,
        per_page=row.per_page or 0,
        per_call=row.per_call or 0,
    )


def config_prices(providers: Iterable[ProviderConfig]) -> dict[str, Price]:
    """The prices the providers file gives its models (the first provider of a model wins)."""
    found: dict[str, Price] = {}
    for provider in providers:
        for model in provider.models:
            if model.price is not None and model.id not in found:
                found[model.id] = parse_price(model.price)
    return found


def load_prices(session: Session, configured: dict[str, Price]) -> PriceBook:
    """Every price in force: the providers file's, replaced by those admins set."""
    prices = dict(configured)
    prices.update({row.model_id: price_of(row) for row in stored_prices(session)})
    return PriceBook(prices)


def load_rules(session: Session, settings: Settings) -> Rules:
    """Every budget and rate limit in force, the settings' defaults among them."""
    rates = [limits.rule_of(row) for row in session.scalars(select(RateLimit))]
    if not any(r.scope == "user" and r.subject_id == 0 and r.model == "" for r in rates):
        default = (settings.default_rpm, settings.default_tpm, settings.default_concurrency)
        if any(value is not None for value in default):
            rates.append(RateRule("user", 0, "", *default))
    return Rules(
        [budgets.rule_of(row) for row in session.scalars(select(Budget))],
        rates,
        {name: group_id for group_id, name in session.execute(select(Group.id, Group.name))},
    )
