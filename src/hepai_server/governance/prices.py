"""Prices: what a model's usage costs, computed once, exactly, when its usage row is built.

Money is kept in integer nanos (10⁻⁹ of the currency, CNY by default or the institute's
"points"), so costs add up exactly and any aggregate can be recomputed from rows. Prices are
written per million tokens (as providers publish them), per page and per call; a price per
million tokens becomes nanos per token (2.5 per million = 2,500 nanos per token), so the
smallest price per million is 0.001.

A model's price comes from the providers file (``price:`` under a model) and is replaced by one
an admin sets in the portal or with ``hepai-server price set``. A price change applies to
requests that end after it; a row's cost is never recomputed from later prices.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

from hepai_server.errors import InvalidRequest
from hepai_server.protocol.openai import Usage

NANOS = 1_000_000_000
#: Nanos per token for a price of 1 per million tokens.
PER_MILLION = NANOS // 1_000_000
#: The price fields, as written in the providers file, the CLI and the portal.
TOKEN_PRICES = ("input", "cached_input", "output", "reasoning", "embedding")
UNIT_PRICES = ("per_page", "per_call")
MAX_PRICE = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price: token prices in nanos per token, unit prices in nanos per unit.

    ``cached_input`` and ``reasoning`` default to ``input`` and ``output`` (None: charge as
    those); ``embedding`` prices the input of embedding models (None: ``input``).
    """

    input: int = 0
    cached_input: int | None = None
    output: int = 0
    reasoning: int | None = None
    embedding: int | None = None
    per_page: int = 0
    per_call: int = 0

    @property
    def is_free(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))

    def cost(self, usage: Usage, *, embedding: bool = False, succeeded: bool = True) -> int:
        """What ``usage`` costs, in nanos: its tokens and pages whatever happened, the price
        per call only for a call that succeeded."""
        prompt = usage.prompt_tokens or 0
        completion = usage.completion_tokens or 0
        if usage.prompt_tokens is None and usage.completion_tokens is None:
            prompt = usage.total_tokens or 0  # a tool that reports tokens only
        cached = min(usage.cached_tokens or 0, prompt)
        reasoning = min(usage.reasoning_tokens or 0, completion)
        input_price = self.embedding if embedding and self.embedding is not None else self.input
        cached_price = self.cached_input if self.cached_input is not None else input_price
        reasoning_price = self.reasoning if self.reasoning is not None else self.output
        return (
            (prompt - cached) * input_price
            + cached * cached_price
            + (completion - reasoning) * self.output
            + reasoning * reasoning_price
            + (usage.pages or 0) * self.per_page
            + (self.per_call if succeeded else 0)
        )

    def as_written(self) -> dict[str, str | None]:
        """The price as people write it: per million tokens, per page, per call."""
        written: dict[str, str | None] = {}
        for name in TOKEN_PRICES:
            value = getattr(self, name)
            written[name] = None if value is None else _decimal(value, PER_MILLION)
        for name in UNIT_PRICES:
            written[name] = _decimal(getattr(self, name), NANOS)
        return written


def _decimal(nanos: int, scale: int) -> str:
    return format((Decimal(nanos) / scale).normalize(), "f")


def parse_price(written: dict[str, Any]) -> Price:
    """A price from its written form (numbers per million tokens, per page, per call); unknown
    fields, negative or too precise numbers are refused."""
    unknown = set(written) - set(TOKEN_PRICES) - set(UNIT_PRICES)
    if unknown:
        raise InvalidRequest(
            f"unknown price fields {sorted(unknown)}; known: "
            + ", ".join((*TOKEN_PRICES, *UNIT_PRICES)),
            param="price",
        )
    values: dict[str, int | None] = {}
    for name in TOKEN_PRICES:
        values[name] = _nanos(written.get(name), PER_MILLION, name)
    for name in UNIT_PRICES:
        values[name] = _nanos(written.get(name), NANOS, name) or 0
    return Price(
        input=values["input"] or 0,
        cached_input=values["cached_input"],
        output=values["output"] or 0,
        reasoning=values["reasoning"],
        embedding=values["embedding"],
        per_page=values["per_page"] or 0,
        per_call=values["per_call"] or 0,
    )


def _nanos(value: Any, scale: int, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidRequest(f"price '{name}' must be a number", param=name) from None
    if not number.is_finite() or number < 0 or number > MAX_PRICE:
        raise InvalidRequest(f"price '{name}' must be from 0 to {MAX_PRICE}", param=name)
    nanos = number * scale
    if nanos != nanos.to_integral_value():
        raise InvalidRequest(
            f"price '{name}' is too precise: at most {len(str(scale)) - 1} decimal places",
            param=name,
        )
    return int(nanos)


def parse_amount(value: Any, *, param: str = "amount") -> int:
    """An amount of money (or points) as people write it, in nanos: at most 9 decimals, not
    negative."""
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidRequest(f"'{param}' must be a number", param=param) from None
    nanos = number * NANOS
    if not number.is_finite() or number < 0 or nanos != nanos.to_integral_value():
        raise InvalidRequest(f"'{param}' is a positive amount with at most 9 decimals", param=param)
    return int(nanos)


def format_money(nanos: int, *, places: int = 4) -> str:
    """An amount for people: ``12.3456`` (rounded to ``places`` decimals)."""
    return f"{Decimal(nanos) / NANOS:.{places}f}"


class PriceBook:
    """Every priced model's price, as of the last catalog load; a new book replaces it."""

    def __init__(self, prices: dict[str, Price]) -> None:
        self._prices = prices

    def get(self, model: str) -> Price | None:
        return self._prices.get(model)

    def items(self) -> list[tuple[str, Price]]:
        return sorted(self._prices.items())

    def cost(
        self, model: str, usage: Usage, *, embedding: bool = False, succeeded: bool = True
    ) -> int:
        price = self._prices.get(model)
        if price is None:
            return 0
        return price.cost(usage, embedding=embedding, succeeded=succeeded)
