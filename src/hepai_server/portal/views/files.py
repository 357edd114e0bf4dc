"""My files: upload (with progress where scripts run), copy a file's preview URL, download,
delete. The same file service as /apiv2/files, acting as the signed-in user."""

from __future__ import annotations

import secrets

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from hepai_server.db.tables import StoredFile
from hepai_server.errors import InvalidRequest, PermissionDenied
from hepai_server.files import delivery
from hepai_server.files.intake import DEFAULT_PURPOSE, read_form
from hepai_server.files.responses import preview_url, send_file
from hepai_server.files.service import used_bytes
from hepai_server.portal.web import Portal, Viewer, check_origin, done, gateway

#: Files shown on the page, newest first.
SHOWN = 200


async def files_page(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    gw = gateway(request)
    files, more = await gw.files.page(
        user_id=viewer.user_id, limit=SHOWN, after=None, ascending=False, purpose=None
    )
    used = await gw.transact(lambda s: used_bytes(s, viewer.user_id))
    return portal.render(
        request,
        "files.html",
        viewer=viewer,
        files=[(file, preview_url(gw.settings, request, file.id)) for file in files],
        more=more,
        used=used,
        quota=gw.settings.user_storage_quota_bytes,
        max_bytes=gw.settings.file_max_bytes,
        is_image=delivery.is_inline,
    )


async def upload_file(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    file = await receive_upload(request, viewer)
    return await done(request, viewer, "/files", "files.uploaded", name=file.filename)


async def receive_upload(request: Request, viewer: Viewer) -> StoredFile:
    """The form's file, kept as the viewer's. It goes to a spool first (within the user's
    quota), and is kept only if the form's CSRF token is the session's: a forged upload is
    read and thrown away."""
    check_origin(request)
    files = gateway(request).files
    spool = await files.spool_for(viewer.user_id, declared=declared_length(request))
    async with spool:
        try:
            form = await read_form(
                request.stream(),
                content_type=request.headers.get("content-type", ""),
                file_field="file",
                spool=spool,
            )
        except ClientDisconnect:
            raise InvalidRequest("the upload was interrupted") from None
        sent = form.fields.get("csrf_token", "")
        if not secrets.compare_digest(sent.encode(), viewer.csrf_token.encode()):
            raise PermissionDenied(
                "the form has expired; reload the page and try again", param="csrf_token"
            )
        spooled = await spool.finish()
    name = delivery.display_name(form.filename)
    return await files.add(
        user_id=viewer.user_id, spooled=spooled, filename=name, purpose=DEFAULT_PURPOSE
    )


def declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() and len(value) <= 18 else None


async def download_file(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    files = gateway(request).files
    file = await files.get(user_id=viewer.user_id, file_id=request.path_params["file_id"])
    return await send_file(files, request, file, cache="private, no-store")


async def delete_file(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    await portal.form(request, viewer)
    await gateway(request).files.delete(
        user_id=viewer.user_id, file_id=request.path_params["file_id"]
    )
    return await done(request, viewer, "/files", "files.deleted")
