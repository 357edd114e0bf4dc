"""The file routes (wire spec §4): /files, /files/{id}/content, the public /files/{id}/preview,
and the resumable /uploads. Thin: parse, call the file services, encode."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from hepai_server.db.tables import StoredFile
from hepai_server.errors import InvalidRequest
from hepai_server.files import delivery, grant
from hepai_server.files.facts import file_facts, part_facts, upload_facts
from hepai_server.files.intake import DEFAULT_PURPOSE, read_form
from hepai_server.files.responses import preview_url, send_file
from hepai_server.gateway.auth import token_from_headers
from hepai_server.gateway.runtime import Gateway
from hepai_server.protocol import files as wire
from hepai_server.routes.http import authenticate, json_body, json_response

_PURPOSE = re.compile(r"^[a-z0-9_.-]{1,64}$")
MAX_PAGE = 10_000


def _purpose(value: object) -> str:
    if value is None or value == "":
        return DEFAULT_PURPOSE
    if not isinstance(value, str) or not _PURPOSE.match(value):
        raise InvalidRequest(
            "'purpose' must be a short lowercase word such as user_data", param="purpose"
        )
    return value


def _declared(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18:
        raise InvalidRequest("invalid Content-Length header")
    return int(value)


async def _stream(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise InvalidRequest("the client disconnected before the upload finished") from None


def _file(gateway: Gateway, request: Request, file: StoredFile) -> dict[str, Any]:
    return wire.file_object(
        file_facts(file), preview_url=preview_url(gateway.settings, request, file.id)
    )


async def acting_user(request: Request, *, file_id: str | None) -> tuple[Gateway, int]:
    """Whose files a request works on: the API key's user, or the user a worker's grant acts
    for (reading ``file_id``, which the grant must name, or storing a new file)."""
    token = token_from_headers(dict(request.scope["headers"]))
    if token is None or not grant.is_grant(token):
        gateway, caller = await authenticate(request)
        return gateway, caller.user_id
    gateway = request.state.gateway
    grants = gateway.grants
    return gateway, grants.holder(token) if file_id is None else grants.check(token, file_id)


async def create_file(request: Request) -> Response:
    """A new file of the caller, or of the user a worker's grant acts for (its results)."""
    gateway, user_id = await acting_user(request, file_id=None)
    files = gateway.files
    spool = await files.spool_for(user_id, declared=_declared(request))
    async with spool:
        form = await read_form(
            _stream(request),
            content_type=request.headers.get("content-type", ""),
            file_field="file",
            spool=spool,
        )
        purpose = _purpose(form.fields.get("purpose"))
        spooled = await spool.finish()
    file = await files.add(
        user_id=user_id,
        spooled=spooled,
        filename=delivery.display_name(form.filename),
        purpose=purpose,
    )
    return json_response(_file(gateway, request, file))


def _limit(value: str | None) -> int:
    if value is None:
        return MAX_PAGE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {MAX_PAGE}", param="limit")
    return int(value)


async def list_files(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    query = request.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be asc or desc", param="order")
    page, has_more = await gateway.files.page(
        user_id=caller.user_id,
        limit=_limit(query.get("limit")),
        after=query.get("after") or None,
        ascending=order == "asc",
        purpose=query.get("purpose") or None,
    )
    objects = [_file(gateway, request, file) for file in page]
    return json_response(wire.file_list(objects, has_more=has_more))


async def retrieve_file(request: Request) -> Response:
    file_id = request.path_params["file_id"]
    gateway, user_id = await acting_user(request, file_id=file_id)
    file = await gateway.files.get(user_id=user_id, file_id=file_id)
    return json_response(_file(gateway, request, file))


async def delete_file(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    file_id = request.path_params["file_id"]
    # A deleted file leaves every vector store it was in, chunks and all (first: the file's
    # rows go with it).
    await gateway.knowledge.forget_file(caller.user_id, file_id)
    await gateway.files.delete(user_id=caller.user_id, file_id=file_id)
    return json_response(wire.file_deleted(file_id))


async def file_content(request: Request) -> Response:
    """The bytes, for their owner or a worker holding a grant for them; ``Range`` resumes a
    download (206)."""
    file_id = request.path_params["file_id"]
    gateway, user_id = await acting_user(request, file_id=file_id)
    file = await gateway.files.get(user_id=user_id, file_id=file_id)
    return await send_file(gateway.files, request, file, cache="private, no-store")


async def file_preview(request: Request) -> Response:
    """The shareable link: no Authorization, the file id is the capability. Images inline,
    everything else as a download, neither able to run script in the platform's origin."""
    gateway: Gateway = request.state.gateway
    file = await gateway.files.get_shared(request.path_params["file_id"])
    etag = f'"{file.sha256[:32]}"'
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"etag": etag, **delivery.SECURITY_HEADERS})
    response = await send_file(gateway.files, request, file, cache="no-cache")
    response.headers["etag"] = etag
    return response


# -- resumable uploads ------------------------------------------------------------------------


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{name}' must be a non-empty string", param=name)
    return value


async def create_upload(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    body = await json_body(request)
    size = body.get("bytes")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidRequest(
            "'bytes' must be the file's size, a non-negative integer", param="bytes"
        )
    mime_type = _text(body, "mime_type", required=False) or delivery.OCTET_STREAM
    if len(mime_type) > 128:
        raise InvalidRequest("'mime_type' is too long", param="mime_type")
    upload = await gateway.uploads.begin(
        user_id=caller.user_id,
        size=size,
        filename=delivery.display_name(_text(body, "filename")),
        mime_type=mime_type,
        purpose=_purpose(body.get("purpose")),
    )
    return json_response(wire.upload_object(upload_facts(upload)))


async def add_upload_part(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    uploads = gateway.uploads
    upload = await uploads.pending(
        user_id=caller.user_id, upload_id=request.path_params["upload_id"]
    )
    spool = await uploads.spool_for_part(upload, declared=_declared(request))
    async with spool:
        await read_form(
            _stream(request),
            content_type=request.headers.get("content-type", ""),
            file_field="data",
            spool=spool,
        )
        spooled = await spool.finish()
    part = await uploads.add_part(upload, spooled)
    return json_response(wire.upload_part_object(part_facts(part)))


async def complete_upload(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    body = await json_body(request)
    part_ids = body.get("part_ids")
    if not isinstance(part_ids, list) or not all(isinstance(p, str) for p in part_ids):
        raise InvalidRequest("'part_ids' must be a list of part ids", param="part_ids")
    md5 = body.get("md5")
    if md5 is not None and (not isinstance(md5, str) or not re.fullmatch(r"[0-9a-fA-F]{32}", md5)):
        raise InvalidRequest("'md5' must be the file's MD5 as 32 hex digits", param="md5")
    upload, file = await gateway.uploads.complete(
        user_id=caller.user_id,
        upload_id=request.path_params["upload_id"],
        part_ids=part_ids,
        md5=md5,
    )
    return json_response(
        wire.upload_object(upload_facts(upload), file=_file(gateway, request, file))
    )


async def cancel_upload(request: Request) -> Response:
    gateway, caller = await authenticate(request)
    upload = await gateway.uploads.cancel(
        user_id=caller.user_id, upload_id=request.path_params["upload_id"]
    )
    return json_response(wire.upload_object(upload_facts(upload)))
