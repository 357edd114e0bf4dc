"""Uploads: resumable uploads, a declared file sent in parts of at most 64 MiB (wire spec §4.2).

``begin`` declares the size (checked against the file limit and the quota up front); each
part is spooled and stored as it comes; ``complete`` joins the named parts in order, checks the
size and the MD5 the client computed, and turns the result into a file. An upload that is not
completed by ``expires_at`` expires and its parts are deleted (FileService.purge_expired).

Status moves pending → completing → completed, or → cancelled / expired. ``completing`` is
taken with a conditional UPDATE, so two concurrent completions cannot both build the file.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from hepai_server.db.engine import transact
from hepai_server.db.tables import StoredFile, Upload, UploadPart, utcnow
from hepai_server.errors import InvalidRequest, NotFound, PayloadTooLarge
from hepai_server.files.service import FORM_OVERHEAD, FileService, new_id, used_bytes
from hepai_server.files.spool import Spool, Spooled

PART_MAX_BYTES = 64 * 1024 * 1024


class UploadService:
    def __init__(self, files: FileService) -> None:
        self.files = files
        self.engine = files.engine
        self.settings = files.settings

    async def begin(
        self, *, user_id: int, size: int, filename: str, mime_type: str, purpose: str
    ) -> Upload:
        if size > self.settings.file_max_bytes:
            raise self.files.file_too_large()
        if size > await self.files.room_left(user_id):
            raise self.files.quota_exceeded()
        now = utcnow()
        upload = Upload(
            id=new_id("upload"),
            user_id=user_id,
            filename=filename,
            purpose=purpose,
            mime_type=mime_type,
            bytes=size,
            status="pending",
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.upload_expiry_seconds),
        )

        def insert(session: Session) -> Upload:
            session.add(upload)
            return upload

        return await transact(self.engine, insert)

    async def get(self, *, user_id: int, upload_id: str) -> Upload:
        upload = await transact(self.engine, lambda s: s.get(Upload, upload_id))
        if upload is None or upload.user_id != user_id:
            raise NotFound(f"No such Upload object: {upload_id[:64]}", param="upload_id")
        return upload

    async def pending(self, *, user_id: int, upload_id: str) -> Upload:
        """The upload, if parts may still be added to it or it may be completed."""
        upload = await self.get(user_id=user_id, upload_id=upload_id)
        if upload.status == "pending" and upload.expires_at <= utcnow():
            raise InvalidRequest(
                f"upload {upload.id} expired at {upload.expires_at.isoformat()}; start a new one",
                param="upload_id",
            )
        if upload.status != "pending":
            raise InvalidRequest(
                f"upload {upload.id} is {upload.status}, not pending", param="upload_id"
            )
        return upload

    async def spool_for_part(self, upload: Upload, *, declared: int | None) -> Spool:
        """A spool for one part: at most 64 MiB, the upload's declared size, and the room left
        in the user's quota. The parts together are bounded by the quota, not by the declared
        size: a part whose answer the client lost is sent again, and the first copy stays
        behind unused until the upload completes or expires."""
        room = await self.files.room_left(upload.user_id)
        limit = min(PART_MAX_BYTES, upload.bytes)

        def too_large() -> PayloadTooLarge:
            if upload.bytes < PART_MAX_BYTES:
                return PayloadTooLarge(
                    f"a part may not be larger than the {upload.bytes} bytes declared for "
                    "this upload",
                    param="data",
                )
            return PayloadTooLarge(f"a part may have at most {PART_MAX_BYTES} bytes", param="data")

        if declared is not None and declared > limit + FORM_OVERHEAD:
            raise too_large()
        if declared is not None and declared > room + FORM_OVERHEAD:
            raise self.files.quota_exceeded()
        if room < limit:
            return Spool(
                self.files.storage.spool_dir, limit=room, too_large=self.files.quota_exceeded
            )
        return Spool(self.files.storage.spool_dir, limit=limit, too_large=too_large)

    async def add_part(self, upload: Upload, spooled: Spooled) -> UploadPart:
        key = secrets.token_hex(16)
        try:
            await self.files.storage.put(key, spooled.path)
        finally:
            spooled.path.unlink(missing_ok=True)
        part = UploadPart(
            id=new_id("part"),
            upload_id=upload.id,
            bytes=spooled.size,
            storage_key=key,
            created_at=utcnow(),
        )

        quota = self.settings.user_storage_quota_bytes

        def insert(session: Session) -> UploadPart:
            current = session.get(Upload, upload.id, with_for_update=True)
            if current is None or current.status != "pending":
                raise InvalidRequest(f"upload {upload.id} is no longer pending")
            if used_bytes(session, upload.user_id) + part.bytes > quota:
                raise self.files.quota_exceeded()
            session.add(part)
            return part

        try:
            return await transact(self.engine, insert)
        except BaseException:
            await self.files.discard(key)
            raise

    async def complete(
        self, *, user_id: int, upload_id: str, part_ids: list[str], md5: str | None
    ) -> tuple[Upload, StoredFile]:
        """Join the listed parts into the file. A repeated call for a completed upload (the
        client lost the answer and retries) answers the same upload and file again."""
        upload = await self.get(user_id=user_id, upload_id=upload_id)
        if upload.status == "completed" and upload.file_id is not None:
            file = await self.files.get(user_id=user_id, file_id=upload.file_id)
            return upload, file
        upload = await self.pending(user_id=user_id, upload_id=upload_id)
        parts = {part.id: part for part in upload.parts}
        unknown = [pid for pid in part_ids if pid not in parts]
        if unknown or len(set(part_ids)) != len(part_ids):
            raise InvalidRequest(
                "part_ids must list parts of this upload, each once", param="part_ids"
            )
        ordered = [parts[pid] for pid in part_ids]
        total = sum(part.bytes for part in ordered)
        if total != upload.bytes:
            raise InvalidRequest(
                f"the listed parts hold {total} bytes; the upload declared {upload.bytes}",
                param="part_ids",
            )
        await self._transition(upload.id, "pending", "completing")
        try:
            spooled = await self._join(ordered, size=total)
            if md5 is not None and spooled.md5 != md5.lower():
                spooled.path.unlink(missing_ok=True)
                raise InvalidRequest(
                    f"the MD5 of the joined parts is {spooled.md5}, not {md5}; "
                    "nothing was stored, re-send the parts that differ",
                    param="md5",
                )
            file = await self.files.add(
                user_id=user_id,
                spooled=spooled,
                filename=upload.filename,
                purpose=upload.purpose,
            )
        except BaseException:
            await self._transition(upload.id, "completing", "pending")
            raise
        done = await self._finish(upload.id, file.id)
        for part in upload.parts:  # the listed ones, and any a lost answer left behind
            await self.files.discard(part.storage_key)
        return done, file

    async def _join(self, parts: list[UploadPart], *, size: int) -> Spooled:
        """The parts, in order, as one spool file; hashed on the way."""
        spool = Spool(
            self.files.storage.spool_dir,
            limit=size,
            too_large=lambda: InvalidRequest("the stored parts are larger than declared"),
        )
        async with spool:
            for part in parts:
                async for chunk in await self.files.storage.open(part.storage_key):
                    await spool.write(chunk)
            return await spool.finish()

    async def _transition(self, upload_id: str, old: str, new: str) -> None:
        def work(session: Session) -> int:
            result = session.execute(
                update(Upload)
                .where(Upload.id == upload_id, Upload.status == old)
                .values(status=new)
            )
            return int(getattr(result, "rowcount", 0))

        if await transact(self.engine, work) != 1:
            raise InvalidRequest(f"upload {upload_id} is no longer {old}", param="upload_id")

    async def _finish(self, upload_id: str, file_id: str) -> Upload:
        def work(session: Session) -> Upload:
            upload = session.get(Upload, upload_id)
            assert upload is not None
            upload.status = "completed"
            upload.file_id = file_id
            upload.parts.clear()
            return upload

        return await transact(self.engine, work)

    async def cancel(self, *, user_id: int, upload_id: str) -> Upload:
        await self.get(user_id=user_id, upload_id=upload_id)

        def work(session: Session) -> tuple[Upload, list[str]]:
            upload = session.get(Upload, upload_id, with_for_update=True)
            assert upload is not None
            if upload.status not in ("pending", "expired"):
                raise InvalidRequest(
                    f"upload {upload.id} is {upload.status}; only a pending upload can be "
                    "cancelled",
                    param="upload_id",
                )
            keys = [part.storage_key for part in upload.parts]
            upload.status = "cancelled"
            upload.parts.clear()
            return upload, keys

        upload, keys = await transact(self.engine, work)
        for key in keys:
            await self.files.discard(key)
        return upload
