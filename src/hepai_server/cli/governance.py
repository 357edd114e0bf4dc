"""`hepai-server price`, `limit` and `budget`: what models cost, and what each account, group or
key may spend and how fast. Every change is audited and reaches every server within a second
(this machine's through the generation file, other machines' through Redis)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from sqlalchemy.orm import Session

from hepai_server.cli.context import database
from hepai_server.config import Settings
from hepai_server.db.tables import ApiKey
from hepai_server.errors import InvalidRequest
from hepai_server.governance import budgets, limits, store
from hepai_server.governance.prices import format_money, parse_amount, parse_price
from hepai_server.services import accounts, audit

CLI = "cli"


def _audit(session: Session, action: str, target: str, detail: Mapping[str, object]) -> None:
    audit.record(
        session, actor_id=None, actor=CLI, action=action, target=target, detail=dict(detail)
    )


@click.group()
def price() -> None:
    """Set and list model prices (per million tokens, per page, per call)."""


@price.command("set")
@click.argument("model")
@click.option("--input", "input_", default=None, help="Per million prompt tokens.")
@click.option("--cached-input", default=None, help="Per million cached prompt tokens.")
@click.option("--output", default=None, help="Per million completion tokens.")
@click.option("--reasoning", default=None, help="Per million reasoning tokens.")
@click.option("--embedding", default=None, help="Per million tokens embedded.")
@click.option("--per-page", default=None, help="Per page a document tool converts.")
@click.option("--per-call", default=None, help="Per call that succeeds.")
def price_set(model: str, **written: str | None) -> None:
    """Set MODEL's price; it applies to requests that end from now on."""
    fields = {("input" if k == "input_" else k): v for k, v in written.items() if v is not None}
    try:
        parsed = parse_price(fields)
    except Exception as error:
        raise click.ClickException(str(getattr(error, "message", error))) from None
    with database(changes_catalog=True) as session:
        store.set_price(session, model_id=model, price=parsed, now=datetime.now(UTC), by=CLI)
        _audit(session, "price.set", model, {"price": parsed.as_written()})
    click.echo(f"price of {model} set", err=True)


@price.command("clear")
@click.argument("model")
def price_clear(model: str) -> None:
    """Remove the price set for MODEL (the providers file's applies again, if any)."""
    with database(changes_catalog=True) as session:
        store.clear_price(session, model_id=model)
        _audit(session, "price.clear", model, {})


@price.command("list")
def price_list() -> None:
    """Every price set here, per million tokens / per page / per call."""
    currency = Settings().currency
    with database() as session:
        for row in store.stored_prices(session):
            written = store.price_of(row).as_written()
            shown = " ".join(f"{k}={v}" for k, v in written.items() if v not in (None, "0"))
            click.echo(f"{row.model_id}\t{currency}\t{shown or 'free'}")


def _subject(
    session: Session, user: str | None, group: str | None, key: int | None
) -> tuple[str, int]:
    given = [value for value in (user, group, key) if value is not None]
    if len(given) != 1:
        raise click.UsageError("name exactly one of --user, --group and --key")
    if user is not None:
        return "user", accounts.get_user(session, user).id
    if group is not None:
        return "group", accounts.ensure_group(session, group).id
    assert key is not None
    if session.get(ApiKey, key) is None:
        raise click.ClickException(f"no API key with id {key}")
    return "key", key


def _money(value: str) -> int:
    try:
        return parse_amount(value)
    except InvalidRequest as error:
        raise click.BadParameter(error.message) from None


subject_options = [
    click.option("--user", default=None, help="A user, by name."),
    click.option("--group", default=None, help="A group, by name."),
    click.option("--key", type=int, default=None, help="An API key, by id (`key list`)."),
]


F = TypeVar("F", bound=Callable[..., Any])


def with_subject(command: F) -> F:
    """The --user, --group and --key options of a command."""
    for option in reversed(subject_options):
        command = option(command)
    return command


@click.group()
def budget() -> None:
    """Set, list and clear budgets of users, groups and keys."""


@budget.command("set")
@with_subject
@click.option("--amount", default=None, help="Money (or points) per period.")
@click.option("--tokens", type=int, default=None, help="Tokens per period.")
@click.option(
    "--period",
    type=click.Choice(budgets.PERIODS),
    default="month",
    show_default=True,
    help="The calendar period, or once (a grant).",
)
@click.option("--warn-at", type=float, default=0.8, show_default=True, help="Share to warn at.")
def budget_set(
    user: str | None,
    group: str | None,
    key: int | None,
    amount: str | None,
    tokens: int | None,
    period: str,
    warn_at: float,
) -> None:
    """Set the budget of one user, group or key (replacing its own)."""
    amount_nanos = _money(amount) if amount is not None else None
    with database(changes_catalog=True) as session:
        scope, subject_id = _subject(session, user, group, key)
        budgets.set_budget(
            session,
            scope=scope,
            subject_id=subject_id,
            amount_nanos=amount_nanos,
            tokens=tokens,
            period=period,
            warn_at=warn_at,
            now=datetime.now(UTC),
            by=CLI,
        )
        detail = {"amount": amount, "tokens": tokens, "period": period, "warn_at": warn_at}
        _audit(session, "budget.set", f"{scope}:{user or group or key}", detail)
    click.echo(f"budget of {scope} {user or group or key} set", err=True)


@budget.command("clear")
@with_subject
def budget_clear(user: str | None, group: str | None, key: int | None) -> None:
    """Remove the budget of one user, group or key."""
    with database(changes_catalog=True) as session:
        scope, subject_id = _subject(session, user, group, key)
        budgets.clear_budget(session, scope=scope, subject_id=subject_id)
        _audit(session, "budget.clear", f"{scope}:{user or group or key}", {})


@budget.command("list")
def budget_list() -> None:
    """Every budget with what its current period spent."""
    settings = Settings()
    with database() as session:
        for row in budgets.list_budgets(session):
            rule = budgets.rule_of(row)
            start, _end = rule.window(datetime.now(UTC), settings.budget_zone)
            money, tokens = budgets.spent(session, row.id, start)
            limit = [
                f"{format_money(row.amount_nanos, places=2)} {settings.currency}"
                if row.amount_nanos is not None
                else "",
                f"{row.tokens} tokens" if row.tokens is not None else "",
            ]
            click.echo(
                f"{row.id}\t{row.scope}:{row.subject_id}\t{row.period}\t"
                f"{' + '.join(x for x in limit if x)}\tspent {format_money(money, places=2)} "
                f"{settings.currency}, {tokens} tokens since {start.isoformat()}"
            )


@click.group()
def limit() -> None:
    """Set, list and clear rate limits (RPM, TPM, requests at once)."""


@limit.command("set")
@with_subject
@click.option("--everyone", is_flag=True, help="The default of every user without their own.")
@click.option("--model", default="", help="Only this model (with no subject: everyone's calls).")
@click.option("--rpm", type=int, default=None, help="Requests per minute.")
@click.option("--tpm", type=int, default=None, help="Tokens per minute.")
@click.option("--concurrency", type=int, default=None, help="Requests at once.")
def limit_set(
    user: str | None,
    group: str | None,
    key: int | None,
    everyone: bool,
    model: str,
    rpm: int | None,
    tpm: int | None,
    concurrency: int | None,
) -> None:
    """Set the rate limits of a user, group, key, every user (--everyone), or of a model for
    everyone together (--model alone)."""
    with database(changes_catalog=True) as session:
        scope, subject_id = _limit_subject(session, user, group, key, everyone, model)
        limits.set_limit(
            session,
            scope=scope,
            subject_id=subject_id,
            model=model,
            rpm=rpm,
            tpm=tpm,
            concurrency=concurrency,
            now=datetime.now(UTC),
            by=CLI,
        )
        detail = {"model": model, "rpm": rpm, "tpm": tpm, "concurrency": concurrency}
        _audit(session, "limit.set", f"{scope}:{subject_id}", detail)
    click.echo("limit set", err=True)


def _limit_subject(
    session: Session,
    user: str | None,
    group: str | None,
    key: int | None,
    everyone: bool,
    model: str,
) -> tuple[str, int]:
    if everyone:
        if user or group or key is not None:
            raise click.UsageError("--everyone names no user, group or key")
        return "user", 0
    if user is None and group is None and key is None:
        if not model:
            raise click.UsageError("name --user, --group, --key, --everyone, or a --model")
        return "model", 0
    return _subject(session, user, group, key)


@limit.command("clear")
@with_subject
@click.option("--everyone", is_flag=True, help="The default of every user.")
@click.option("--model", default="", help="The model the limit is on.")
def limit_clear(
    user: str | None, group: str | None, key: int | None, everyone: bool, model: str
) -> None:
    """Remove a rate limit."""
    with database(changes_catalog=True) as session:
        scope, subject_id = _limit_subject(session, user, group, key, everyone, model)
        limits.clear_limit(session, scope=scope, subject_id=subject_id, model=model)
        _audit(session, "limit.clear", f"{scope}:{subject_id}", {"model": model})


@limit.command("list")
def limit_list() -> None:
    """Every rate limit."""
    with database() as session:
        for row in limits.list_limits(session):
            click.echo(
                f"{row.scope}:{row.subject_id}\t{row.model or '*'}\trpm={row.rpm}\t"
                f"tpm={row.tpm}\tconcurrency={row.concurrency}"
            )
