"""The Vector Stores routes (OpenAI's API, as the openai client calls it), plus ``…/share``.
Thin: parse and check the body, call the knowledge service, encode."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.tables import utcnow
from hepai_server.errors import InvalidRequest
from hepai_server.gateway.asgi import REQUEST_ID_KEY, new_request_id
from hepai_server.knowledge.chunking import ChunkingStrategy, strategy_from_request
from hepai_server.knowledge.filters import check_filter
from hepai_server.knowledge.service import Attachment, Search
from hepai_server.protocol import vector_stores as wire
from hepai_server.routes.http import authenticate, json_body, json_response

MAX_PAIRS = 16
MAX_PAGE = 100


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or len(value) > MAX_PAIRS
        or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in value.items()
        )
    ):
        raise InvalidRequest(
            "'metadata' holds at most 16 string pairs (keys to 64, values to 512 characters)",
            param="metadata",
        )
    return value


def _attributes(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or len(value) > MAX_PAIRS
        or not all(
            isinstance(k, str)
            and len(k) <= 64
            and (isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) <= 512))
            for k, v in value.items()
        )
    ):
        raise InvalidRequest(
            "'attributes' holds at most 16 pairs: keys to 64 characters, values strings "
            "(to 512), numbers or booleans",
            param="attributes",
        )
    return value


def _expiry(value: Any) -> int | None:
    if value is None:
        return None
    days = value.get("days") if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or value.get("anchor") != "last_active_at"
        or type(days) is not int
        or not 1 <= days <= 365
    ):
        raise InvalidRequest(
            '\'expires_after\' is {"anchor": "last_active_at", "days": 1 to 365}',
            param="expires_after",
        )
    return days


def _name(value: Any, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise InvalidRequest("'name' must be a string of at most 256 characters", param="name")
    return value


def _file_ids(value: Any, param: str = "file_ids") -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidRequest(f"'{param}' must be a list of file ids", param=param)
    return list(dict.fromkeys(value))


def _attachments(body: dict[str, Any]) -> list[Attachment]:
    """The files of a create or batch body: ``file_ids`` sharing the body's attributes and
    chunking, or ``files``, each with its own."""
    attributes = _attributes(body.get("attributes"))
    strategy = strategy_from_request(body.get("chunking_strategy"))
    attachments = [Attachment(f, attributes, strategy) for f in _file_ids(body.get("file_ids"))]
    files = body.get("files")
    if files is not None:
        if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("file_id"), str) for f in files
        ):
            raise InvalidRequest("'files' must be a list of {file_id, ...}", param="files")
        for item in files:
            own: ChunkingStrategy = (
                strategy_from_request(item["chunking_strategy"])
                if item.get("chunking_strategy") is not None
                else strategy
            )
            own_attributes = (
                _attributes(item["attributes"])
                if item.get("attributes") is not None
                else attributes
            )
            attachments.append(Attachment(item["file_id"], own_attributes, own))
    return attachments


def _page(request: Request) -> tuple[int, str | None, str | None, bool]:
    query = request.query_params
    limit = query.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {MAX_PAGE}", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be asc or desc", param="order")
    return int(limit), query.get("after") or None, query.get("before") or None, order == "asc"


# -- stores -------------------------------------------------------------------------------------


async def create_store(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    body = await json_body(request)
    store = await gateway.knowledge.create_store(
        caller,
        name=_name(body.get("name")) or "",
        metadata=_metadata(body.get("metadata")),
        expires_after_days=_expiry(body.get("expires_after")),
        attachments=_attachments(body),
        now=utcnow(),
    )
    return json_response(wire.store_object(store))


async def list_stores(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    limit, after, before, ascending = _page(request)
    found, more = await gateway.knowledge.list_stores(
        caller, limit=limit, after=after, before=before, ascending=ascending, now=utcnow()
    )
    return json_response(wire.list_page([wire.store_object(s) for s in found], has_more=more))


async def retrieve_store(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    store = await gateway.knowledge.get_store(caller, request.path_params["store_id"], now=utcnow())
    return json_response(wire.store_object(store))


async def modify_store(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    body = await json_body(request)
    store = await gateway.knowledge.update_store(
        caller,
        request.path_params["store_id"],
        name=_name(body.get("name")),
        metadata=_metadata(body["metadata"]) if body.get("metadata") is not None else None,
        expires_after_days=_expiry(body.get("expires_after")),
        change_expiry="expires_after" in body,
        now=utcnow(),
    )
    return json_response(wire.store_object(store))


async def delete_store(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    store_id = request.path_params["store_id"]
    await gateway.knowledge.delete_store(caller, store_id)
    return json_response(wire.store_deleted(store_id))


def _names(value: Any, param: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(v, str) and 0 < len(v) <= 128 for v in value
    ):
        raise InvalidRequest(f"'{param}' must be a list of names", param=param)
    return value


async def share_store(request: Request) -> Response:
    """Ours: ``{"groups": [...], "users": [...]}`` may read and search the store (``all`` is
    everyone); an empty body shares it with nobody again."""
    gateway, caller = await authenticate(request)
    body = await json_body(request)
    store = await gateway.knowledge.share_store(
        caller,
        request.path_params["store_id"],
        groups=_names(body.get("groups"), "groups"),
        users=_names(body.get("users"), "users"),
        now=utcnow(),
    )
    return json_response(wire.store_object(store))


async def search_store(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    body = await json_body(request)
    query = body.get("query")
    if isinstance(query, list) and query and all(isinstance(q, str) for q in query):
        query = " ".join(query)
    if not isinstance(query, str) or not query.strip():
        raise InvalidRequest("'query' must be a non-empty string", param="query")
    limit = body.get("max_num_results", 10)
    if type(limit) is not int:
        raise InvalidRequest("'max_num_results' must be an integer", param="max_num_results")
    options = body.get("ranking_options") or {}
    if not isinstance(options, dict):
        raise InvalidRequest("'ranking_options' must be an object", param="ranking_options")
    threshold = options.get("score_threshold", 0.0)
    if type(threshold) not in (int, float) or not 0 <= threshold <= 1:
        raise InvalidRequest(
            "'score_threshold' must be a number from 0 to 1", param="ranking_options"
        )
    filters = body.get("filters")
    hits = await gateway.knowledge.search(
        caller,
        Search(
            store_ids=[request.path_params["store_id"]],
            query=query,
            max_num_results=limit,
            filters=check_filter(filters) if filters is not None else None,
            score_threshold=float(threshold),
            rerank=options.get("ranker") != "none",
        ),
        request_id=request.scope.get(REQUEST_ID_KEY) or new_request_id(),
        now=utcnow(),
    )
    return json_response(wire.search_page(query, hits))


# -- files ----------------------------------------------------------------------------------------


async def attach_file(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    body = await json_body(request)
    file_id = body.get("file_id")
    if not isinstance(file_id, str) or not file_id:
        raise InvalidRequest("'file_id' is required", param="file_id")
    attachment = Attachment(
        file_id,
        _attributes(body.get("attributes")),
        strategy_from_request(body.get("chunking_strategy")),
    )
    facts = await gateway.knowledge.attach_file(
        caller, request.path_params["store_id"], attachment, now=utcnow()
    )
    return json_response(wire.store_file_object(facts))


def _status(request: Request) -> str | None:
    status = request.query_params.get("filter")
    if status is not None and status not in ("in_progress", "completed", "failed", "cancelled"):
        raise InvalidRequest(
            "'filter' is in_progress, completed, failed or cancelled", param="filter"
        )
    return status


async def list_files(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    limit, after, before, ascending = _page(request)
    found, more = await gateway.knowledge.list_files(
        caller,
        request.path_params["store_id"],
        limit=limit,
        after=after,
        before=before,
        ascending=ascending,
        status=_status(request),
        batch_id=request.path_params.get("batch_id"),
    )
    return json_response(wire.list_page([wire.store_file_object(f) for f in found], has_more=more))


async def retrieve_file(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    params = request.path_params
    facts = await gateway.knowledge.get_file(caller, params["store_id"], params["file_id"])
    return json_response(wire.store_file_object(facts))


async def file_content(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    params = request.path_params
    texts = await gateway.knowledge.file_content(caller, params["store_id"], params["file_id"])
    return json_response(wire.file_content_page(texts))


async def update_file(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    body = await json_body(request)
    params = request.path_params
    facts = await gateway.knowledge.update_file(
        caller,
        params["store_id"],
        params["file_id"],
        attributes=_attributes(body.get("attributes")),
    )
    return json_response(wire.store_file_object(facts))


async def delete_file(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    params = request.path_params
    await gateway.knowledge.delete_file(caller, params["store_id"], params["file_id"])
    return json_response(wire.store_file_deleted(params["file_id"]))


# -- batches ------------------------------------------------------------------------------------


async def create_batch(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    body = await json_body(request)
    batch = await gateway.knowledge.create_batch(
        caller, request.path_params["store_id"], _attachments(body), now=utcnow()
    )
    return json_response(batch)


async def retrieve_batch(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    params = request.path_params
    return json_response(
        await gateway.knowledge.get_batch(caller, params["store_id"], params["batch_id"])
    )


async def cancel_batch(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    params = request.path_params
    return json_response(
        await gateway.knowledge.cancel_batch(caller, params["store_id"], params["batch_id"])
    )
