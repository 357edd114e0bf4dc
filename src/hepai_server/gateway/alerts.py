"""Budget alerts: when a budget's spend crosses its warning threshold or its limit, its owners
are told once per period: in the portal (a notice), through the operator's webhook, and by
e-mail when an SMTP server is configured.

"Once" holds across replicas: the alert is a row keyed by (budget, period, kind), and only the
process whose insert made it sends it on.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from datetime import UTC, date, datetime
from email.message import EmailMessage
from typing import Any

import aiohttp
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hepai_server.db.engine import transact
from hepai_server.db.governance import BudgetAlert, GroupAdmin, Notice
from hepai_server.db.tables import ApiKey, Group, User
from hepai_server.governance.budgets import BudgetRule
from hepai_server.governance.prices import format_money

log = logging.getLogger(__name__)


class Alerts:
    def __init__(
        self,
        engine: Engine,
        session: aiohttp.ClientSession,
        *,
        webhook_url: str | None,
        webhook_format: str,
        currency: str,
        mailer: Mailer | None = None,
    ) -> None:
        self._engine = engine
        self._session = session
        self._url = webhook_url
        self._format = webhook_format
        self._currency = currency
        self._mailer = mailer

    async def on_threshold(
        self, budget: BudgetRule, kind: str, period: date, measure: str, spent: int, limit: int
    ) -> None:
        """Raise the alert unless this period raised it already; ``measure`` is ``money`` or
        ``tokens``."""
        try:
            subject, emails = await transact(
                self._engine,
                lambda s: self._record(s, budget, kind, period, measure, spent, limit),
            )
        except IntegrityError:
            return  # raised already, by this process or another
        text = message(budget, kind, subject, measure, spent, limit, self._currency)
        if self._mailer is not None and emails:
            await self._mailer.send(emails, text)
        if self._url is None:
            return
        try:
            async with self._session.post(
                self._url,
                json=webhook_body(self._format, text, budget, kind, subject, spent, limit),
                timeout=aiohttp.ClientTimeout(total=10),
                allow_redirects=False,
            ) as response:
                if response.status >= 300:
                    log.warning("alert webhook answered %d", response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("alert webhook failed: %s", exc.__class__.__name__)

    def _record(
        self,
        session: Session,
        budget: BudgetRule,
        kind: str,
        period: date,
        measure: str,
        spent: int,
        limit: int,
    ) -> tuple[str, list[str]]:
        session.add(
            BudgetAlert(budget_id=budget.id, period_start=period, kind=kind, created_at=now())
        )
        session.flush()  # IntegrityError here: raised already
        subject, owners = _subject(session, budget)
        detail = {
            "budget_id": budget.id,
            "scope": budget.scope,
            "subject": subject,
            "spent": spent,
            "limit": limit,
            "measure": measure,
        }
        for user_id in owners:
            session.add(Notice(user_id=user_id, kind=f"budget.{kind}", detail=detail))
        emails = [
            email
            for email in session.scalars(select(User.email).where(User.id.in_(owners)))
            if email
        ]
        return subject, emails


def _subject(session: Session, budget: BudgetRule) -> tuple[str, list[int]]:
    """Whom the budget is for, by name, and who is told: the user; a key's owner; a group's
    administrators (or, without any, its members)."""
    if budget.scope == "user":
        user = session.get(User, budget.subject_id)
        return (user.username if user else str(budget.subject_id)), [budget.subject_id]
    if budget.scope == "key":
        key = session.get(ApiKey, budget.subject_id)
        if key is None:
            return str(budget.subject_id), []
        return f"{key.user.username}/{key.name}", [key.user_id]
    group = session.get(Group, budget.subject_id)
    admins = list(
        session.scalars(select(GroupAdmin.user_id).where(GroupAdmin.group_id == budget.subject_id))
    )
    return (group.name if group else str(budget.subject_id)), admins


class Mailer:
    """Alerts by e-mail, through the operator's SMTP server (in a thread: smtplib blocks)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
    ) -> None:
        self._host, self._port = host, port
        self._sender = sender
        self._login = (username, password) if username and password else None
        self._starttls = starttls

    async def send(self, to: list[str], text: str) -> None:
        try:
            await asyncio.to_thread(self._send, to, text)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("alert e-mail failed: %s", exc.__class__.__name__)

    def _send(self, to: list[str], text: str) -> None:
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = self._sender, ", ".join(to), text[:120]
        mail.set_content(text)
        with smtplib.SMTP(self._host, self._port, timeout=10) as smtp:
            if self._starttls:
                smtp.starttls()
            if self._login is not None:
                smtp.login(*self._login)
            smtp.send_message(mail)


def message(
    budget: BudgetRule,
    kind: str,
    subject: str,
    measure: str,
    spent: int,
    limit: int,
    currency: str,
) -> str:
    shown = (
        f"{format_money(spent, places=2)} of {format_money(limit, places=2)} {currency}"
        if measure == "money"
        else f"{spent} of {limit} tokens"
    )
    state = "is spent" if kind == "exhausted" else f"passed {budget.warn_at:.0%}"
    return f"HepAI budget of {budget.scope} {subject} ({budget.period}) {state}: {shown}."


def webhook_body(
    format: str, text: str, budget: BudgetRule, kind: str, subject: str, spent: int, limit: int
) -> dict[str, Any]:
    """The webhook's body: generic JSON, or a chat bot's message format."""
    if format == "wecom":
        return {"msgtype": "text", "text": {"content": text}}
    if format == "dingtalk":
        return {"msgtype": "text", "text": {"content": text}}
    if format == "feishu":
        return {"msg_type": "text", "content": {"text": text}}
    if format == "slack":
        return {"text": text}
    return {
        "event": f"budget.{kind}",
        "text": text,
        "budget": {
            "id": budget.id,
            "scope": budget.scope,
            "subject": subject,
            "period": budget.period,
        },
        "spent": spent,
        "limit": limit,
    }


def now() -> datetime:
    return datetime.now(UTC)
