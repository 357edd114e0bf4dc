"""Knowledge bases (vector stores): my stores, their files as ingestion goes, adding files
(mine or new uploads), a search to try retrieval, and code that searches a store through the
API. The same knowledge service as /apiv2/vector_stores, acting as the signed-in user.

A store's pages are its owner's: any other id, even a store shared with the viewer to read,
is the portal's 404 page, as the API answers a store the caller may not see.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hepai_server.db.tables import User, utcnow
from hepai_server.errors import HepAIError
from hepai_server.gateway.asgi import new_request_id
from hepai_server.knowledge.chunking import ChunkingStrategy
from hepai_server.knowledge.service import Attachment, NamedFile, Search
from hepai_server.portal.i18n import Translator
from hepai_server.portal.notices import describe
from hepai_server.portal.snippets import for_store
from hepai_server.portal.views.files import SHOWN as FILES_SHOWN
from hepai_server.portal.views.files import receive_upload
from hepai_server.portal.views.models import available_models
from hepai_server.portal.web import Portal, Viewer, done, gateway

MAX_NAME = 256
#: Days a store may live unused before it expires (OpenAI's ``expires_after`` range).
MAX_DAYS = 365
MAX_QUERY = 1000
#: The group that is every user (as the API's sharing names it).
EVERYONE = "all"
MAX_SHARED_USERS = 100
#: Hits the page's search shows.
HITS = 8
EMBEDDING = re.compile(r"embedding: (\d+) of (\d+) chunks")
#: What a failed file's ``last_error.code`` means, for people.
ERROR_CODES = ("invalid_file", "unsupported_file", "server_error", "rate_limit_exceeded")


async def knowledge_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    return await render_stores(request, portal, viewer)


async def render_stores(
    request: Request,
    portal: Portal,
    viewer: Viewer,
    *,
    error: str | None = None,
    status: int = 200,
    typed: dict[str, str] | None = None,
) -> Response:
    """The list; after a refused form, with the error and what was typed."""
    found = await gateway(request).knowledge.own_stores(viewer.caller(), now=utcnow())
    return portal.render(
        request,
        "knowledge.html",
        viewer=viewer,
        stores=found,
        error=error,
        status=status,
        typed=typed or {"name": "", "expiry_days": ""},
        max_days=MAX_DAYS,
    )


async def create_store(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    form = await portal.form(request, viewer)
    name = str(form.get("name") or "").strip()
    expiry = str(form.get("expiry_days") or "").strip()
    days = int(expiry) if expiry.isdigit() and len(expiry) <= 4 else None
    error = (
        "knowledge.name_required"
        if not name
        else "knowledge.name_too_long"
        if len(name) > MAX_NAME
        else "knowledge.bad_expiry"
        if expiry and (days is None or not 1 <= days <= MAX_DAYS)
        else None
    )
    if error:
        typed = {"name": name, "expiry_days": expiry}
        return await render_stores(request, portal, viewer, error=error, status=400, typed=typed)
    store = await gateway(request).knowledge.create_store(
        viewer.caller(),
        name=name,
        metadata={},
        expires_after_days=days,
        attachments=[],
        now=utcnow(),
    )
    return await done(request, viewer, f"/knowledge/{store.id}", "knowledge.created", name=name)


async def delete_store(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    await portal.form(request, viewer)
    knowledge, caller = gateway(request).knowledge, viewer.caller()
    store = await knowledge.own_store(caller, request.path_params["store_id"], now=utcnow())
    await knowledge.delete_store(caller, store.id)
    return await done(request, viewer, "/knowledge", "knowledge.deleted", name=store.name)


# -- one store ------------------------------------------------------------------------------------


async def store_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    return await render_store(request, portal, viewer)


async def render_store(
    request: Request,
    portal: Portal,
    viewer: Viewer,
    *,
    error: str | None = None,
    error_values: dict[str, object] | None = None,
    status: int = 200,
    sharing: dict[str, Any] | None = None,
) -> Response:
    """The store's page: its files, the files that may be added, the search (``?q=``) with
    its hits, its sharing, and code; after a refused form, with the error and what was
    typed."""
    gw, caller, now = gateway(request), viewer.caller(), utcnow()
    store = await gw.knowledge.own_store(caller, request.path_params["store_id"], now=now)
    files = await gw.knowledge.own_files(caller, store.id)
    query = request.query_params.get("q", "").strip()[:MAX_QUERY]
    hits, search_error = [], None
    if query and store.expired:
        search_error = "knowledge.search_expired"
    elif query:
        try:
            hits = await gw.knowledge.search(
                caller,
                Search(store_ids=[store.id], query=query, max_num_results=HITS),
                request_id=new_request_id(),
                now=now,
            )
        except HepAIError as failure:
            # The query was fine; what failed is the store's embedding model (gone, denied,
            # down), which the generic messages would not say.
            search_error = (
                "knowledge.search_unavailable"
                if failure.param == "model" or failure.status >= 500
                else describe(failure)
            )
    attached = {named.facts.file_id for named in files}
    mine, _ = await gw.files.page(
        user_id=viewer.user_id, limit=FILES_SHOWN, after=None, ascending=False, purpose=None
    )
    models = await available_models(gw, caller)
    chat = next((m.id for m in models if m.type == "chat" and m.status != "offline"), "MODEL")
    t = portal.translator(request)
    return portal.render(
        request,
        "knowledge_store.html",
        viewer=viewer,
        store=store,
        files=[(named, describe_file(t, named)) for named in files],
        choices=[file for file in mine if file.id not in attached],
        query=query,
        hits=hits,
        search_error=search_error,
        snippets=for_store(
            store.id, chat, query or t("knowledge.sample_query"), portal.base_url(request)
        ),
        error=error,
        error_values=error_values or {},
        status=status,
        groups=sorted((set(viewer.groups) | set(store.shared_groups)) - {EVERYONE}),
        shared_with=[
            t("knowledge.everyone") if group == EVERYONE else group for group in store.shared_groups
        ]
        + store.shared_users,
        everyone=EVERYONE,
        sharing=sharing or {"groups": store.shared_groups, "users": ", ".join(store.shared_users)},
    )


def describe_file(t: Translator, named: NamedFile) -> dict[str, str]:
    """A file's state in the viewer's language: its status, how far ingestion has come, and
    for a failed file what went wrong (the catalog's words, then the tool's own)."""
    facts = named.facts
    stage = facts.stage
    progress = ""
    if facts.status == "in_progress":
        counted = EMBEDDING.fullmatch(stage)
        progress = (
            t("knowledge.stage_embedding", done=counted[1], total=counted[2])
            if counted
            else t("knowledge.stage_retrying")
            if stage.startswith("waiting")
            else t(f"knowledge.stage_{stage}")
            if stage in ("queued", "converting", "chunking", "indexing")
            else ""
        )
    failure = facts.last_error or {}
    code = failure.get("code", "")
    return {
        "status": facts.status,
        "label": t(f"knowledge.status_{facts.status}"),
        "progress": progress,
        "error": t(f"knowledge.error_{code if code in ERROR_CODES else 'other'}")
        if failure
        else "",
        "detail": str(failure.get("message", "")),
    }


async def store_status(request: Request, portal: Portal) -> Response:
    """The files' states, for the page's script to show ingestion's progress without a
    reload."""
    viewer = await portal.viewer(request)
    files = await gateway(request).knowledge.own_files(
        viewer.caller(), request.path_params["store_id"]
    )
    t = portal.translator(request)
    states: dict[str, Any] = {named.facts.file_id: describe_file(t, named) for named in files}
    pending = sum(1 for named in files if named.facts.status == "in_progress")
    return JSONResponse({"files": states, "in_progress": pending})


async def add_files(request: Request, portal: Portal) -> Response:
    """Attach files the viewer uploaded before, as one batch."""
    viewer = await portal.viewer(request)
    form = await portal.form(request, viewer)
    knowledge, caller = gateway(request).knowledge, viewer.caller()
    store = await knowledge.own_store(caller, request.path_params["store_id"], now=utcnow())
    chosen = list(dict.fromkeys(str(value) for value in form.getlist("file_ids")))
    if not chosen:
        return await render_store(
            request, portal, viewer, error="knowledge.choose_files", status=400
        )
    attachments = [Attachment(file_id, {}, ChunkingStrategy()) for file_id in chosen]
    await knowledge.create_batch(caller, store.id, attachments, now=utcnow())
    return await done(
        request, viewer, f"/knowledge/{store.id}", "knowledge.files_added", n=len(chosen)
    )


async def upload_file(request: Request, portal: Portal) -> Response:
    """A new file: kept among the viewer's files, then attached."""
    viewer = await portal.viewer(request)
    knowledge, caller = gateway(request).knowledge, viewer.caller()
    store = await knowledge.own_store(caller, request.path_params["store_id"], now=utcnow())
    file = await receive_upload(request, viewer)
    await knowledge.attach_file(
        caller, store.id, Attachment(file.id, {}, ChunkingStrategy()), now=utcnow()
    )
    return await done(
        request, viewer, f"/knowledge/{store.id}", "knowledge.uploaded", name=file.filename
    )


async def share_store(request: Request, portal: Portal) -> Response:
    """Who besides the owner may read and search the store (through the API and
    ``file_search``): groups chosen from the owner's own (or everyone) and users by name.
    Its pages stay the owner's."""
    viewer = await portal.viewer(request)
    form = await portal.form(request, viewer)
    gw, caller = gateway(request), viewer.caller()
    store = await gw.knowledge.own_store(caller, request.path_params["store_id"], now=utcnow())
    offered = set(viewer.groups) | set(store.shared_groups) | {EVERYONE}
    chosen = sorted({str(v) for v in form.getlist("groups")} & offered)
    typed = str(form.get("users") or "")
    names = sorted({name for name in re.split(r"[\s,\uff0c]+", typed) if name})
    unknown = await gw.transact(lambda session: missing_users(session, names))
    if unknown or len(names) > MAX_SHARED_USERS:
        return await render_store(
            request,
            portal,
            viewer,
            error="knowledge.share_too_many" if not unknown else "knowledge.no_such_users",
            error_values={"names": ", ".join(unknown), "max": MAX_SHARED_USERS},
            status=400,
            sharing={"groups": chosen, "users": typed},
        )
    await gw.knowledge.share_store(caller, store.id, groups=chosen, users=names, now=utcnow())
    return await done(request, viewer, f"/knowledge/{store.id}", "knowledge.shared")


def missing_users(session: Session, names: list[str]) -> list[str]:
    found = set(session.scalars(select(User.username).where(User.username.in_(names))))
    return [name for name in names if name not in found]


async def remove_file(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    await portal.form(request, viewer)
    knowledge, caller = gateway(request).knowledge, viewer.caller()
    store = await knowledge.own_store(caller, request.path_params["store_id"], now=utcnow())
    file_id = request.path_params["file_id"]
    named = {f.facts.file_id: f.filename for f in await knowledge.own_files(caller, store.id)}
    await knowledge.delete_file(caller, store.id, file_id)
    return await done(
        request,
        viewer,
        f"/knowledge/{store.id}",
        "knowledge.removed",
        name=named.get(file_id, file_id),
    )


# -- administrators ---------------------------------------------------------------------------

#: Owners the admin page lists (the totals count every one).
OWNERS_SHOWN = 200


async def admin_page(request: Request, portal: Portal) -> Response:
    """Every user's knowledge bases in sum: stores, files by status, bytes against the quota."""
    viewer = await portal.viewer(request, admin=True)
    gw = gateway(request)
    owners = await gw.knowledge.usage_by_owner()
    return portal.render(
        request,
        "admin_knowledge.html",
        viewer=viewer,
        owners=owners[:OWNERS_SHOWN],
        more=len(owners) > OWNERS_SHOWN,
        totals={
            "owners": len(owners),
            "stores": sum(o.stores for o in owners),
            "files": sum(o.files.total for o in owners),
            "failed": sum(o.files.failed for o in owners),
            "bytes": sum(o.usage_bytes for o in owners),
        },
        quota=gw.settings.knowledge_quota_bytes,
        embedding_model=gw.settings.knowledge_embedding_model,
        rerank_model=gw.settings.knowledge_rerank_model,
    )
