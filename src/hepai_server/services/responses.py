"""The conversation store of the Responses API: each stored Response with the input items it
answered, its owner's alone, for ``previous_response_id``, ``GET /responses/{id}`` and its
input items; expired ones are swept.

A response continues the conversation of its previous one, so a conversation is read by
walking the chain back: every response's input items, then its output, oldest first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Insert, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hepai_server.db.tables import StoredResponse
from hepai_server.errors import InvalidRequest, NotFound

#: How many responses back a conversation is read: beyond this, the request is refused (the
#: client may send the context itself instead).
MAX_CHAIN = 1000


@dataclass(frozen=True, slots=True)
class Conversation:
    """What a response continues: the items so far, and where its last response came from."""

    items: list[dict[str, Any]]
    #: The provider that answered the previous response natively (None: translated here).
    provider: str | None
    previous_id: str


def save_response(
    connection: Connection,
    *,
    user_id: int,
    response: dict[str, Any],
    input_items: list[dict[str, Any]],
    provider: str | None,
    now: datetime,
    retention: timedelta,
) -> None:
    """Keep a response and the input items it answered: one INSERT on a connection, no ORM
    session, since every Responses request pays for it on its way out.

    The platform mints each of its ids once, so one already kept under a platform id was put
    there by an upstream that chose it (a worker answering natively can name any id): the
    platform's response replaces it. An id an upstream chose never replaces a kept one."""
    values = {
        "id": response["id"],
        "user_id": user_id,
        "model": str(response.get("model") or "")[:256],
        "provider": provider,
        "previous_response_id": response.get("previous_response_id"),
        "input_items": input_items,
        "response": response,
        "created_at": now,
        "expires_at": now + retention,
    }
    connection.execute(_insert(connection.dialect.name, replace=provider is None), values)


@functools.cache
def _insert(dialect: str, *, replace: bool) -> Insert:
    """The INSERT of a response, its values bound when it runs: built once per dialect, as
    building it with its values cost more than running it (400 µs of CPU a response, most of
    it SQLAlchemy making the statement and its cache key; measured in process on SQLite)."""
    insert: postgresql.Insert | sqlite.Insert = (
        postgresql.insert(StoredResponse)
        if dialect == "postgresql"
        else sqlite.insert(StoredResponse)
    )
    if not replace:
        return insert.on_conflict_do_nothing(index_elements=["id"])
    columns = [column.name for column in StoredResponse.__table__.columns if column.name != "id"]
    return insert.on_conflict_do_update(
        index_elements=["id"], set_={name: insert.excluded[name] for name in columns}
    )


def find_response(
    session: Session, *, user_id: int, response_id: str, now: datetime
) -> StoredResponse:
    """The caller's stored response; 404 for one that does not exist, expired, or is
    another user's (indistinguishable)."""
    row = session.get(StoredResponse, response_id)
    if row is None or row.user_id != user_id or row.expires_at <= now:
        raise NotFound(f"No response found with id '{response_id[:128]}'.", param="response_id")
    return row


def conversation(
    session: Session, *, user_id: int, response_id: str, now: datetime
) -> Conversation:
    """The conversation up to and including the caller's response ``response_id``."""
    chain: list[StoredResponse] = []
    current: str | None = response_id
    while current is not None:
        if len(chain) == MAX_CHAIN:
            raise InvalidRequest(
                f"the conversation is more than {MAX_CHAIN} responses long; send its context "
                "as input instead",
                param="previous_response_id",
            )
        try:
            row = find_response(session, user_id=user_id, response_id=current, now=now)
        except NotFound:
            if not chain:
                raise NotFound(
                    f"Previous response with id '{response_id[:128]}' not found.",
                    param="previous_response_id",
                ) from None
            break  # an earlier turn expired or was deleted: the conversation starts after it
        chain.append(row)
        current = row.previous_response_id
    items: list[dict[str, Any]] = []
    for row in reversed(chain):
        items += row.input_items
        items += row.response.get("output") or []
    return Conversation(items, chain[0].provider, response_id)


def delete_response(
    session: Session, *, user_id: int, response_id: str, now: datetime
) -> str | None:
    """Delete the caller's response; the provider that holds it too, if one does."""
    row = find_response(session, user_id=user_id, response_id=response_id, now=now)
    provider = row.provider
    session.delete(row)
    return provider


def input_item_page(
    row: StoredResponse, *, limit: int, order: str, after: str | None
) -> dict[str, Any]:
    """A page of a response's input items, as OpenAI lists them (newest first by default)."""
    items = list(row.input_items)
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(items) > limit,
    }


def purge_expired(session: Session, *, now: datetime) -> int:
    """Delete every response past its retention; how many."""
    result = session.execute(delete(StoredResponse).where(StoredResponse.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)
