"""FileService: users' files: adding, listing, reading, deleting, quotas and retention.

Ownership is the one rule of this module: every lookup is by (owner, id), and a file of
someone else answers exactly like a missing one, so ids cannot be probed. The public preview
is the single exception, and it is by design: the file id is the capability (docs/files.md).

A file's bytes go to the storage backend before its row is written, so a row never points at
missing bytes; if the row cannot be written (a quota reached meanwhile), the bytes are removed.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Engine, delete, func, or_, select
from sqlalchemy.orm import Session

from hepai_server.config import Settings
from hepai_server.db.engine import transact
from hepai_server.db.tables import StoredFile, Upload, UploadPart, User, utcnow
from hepai_server.errors import NotFound, PayloadTooLarge, QuotaExceeded
from hepai_server.files.delivery import content_type_for
from hepai_server.files.spool import Spool, Spooled
from hepai_server.files.storage import Storage

log = logging.getLogger(__name__)

#: Rows one sweep of expired files and uploads handles; the next sweep takes the rest.
MAX_LIST = 10_000
#: Room for the multipart framing and text fields around a file part.
FORM_OVERHEAD = 64 * 1024


def new_id(prefix: str) -> str:
    """``file-``/``upload-``/``part-`` and 128 random bits: unguessable, so a capability."""
    return f"{prefix}-{secrets.token_hex(16)}"


@dataclass(frozen=True, slots=True)
class StorageUse:
    user_id: int
    username: str
    files: int
    bytes: int


class FileService:
    def __init__(self, settings: Settings, engine: Engine, storage: Storage) -> None:
        self.settings = settings
        self.engine = engine
        self.storage = storage

    # -- limits ---------------------------------------------------------------------------------

    def file_too_large(self) -> PayloadTooLarge:
        limit = self.settings.file_max_bytes
        return PayloadTooLarge(f"a file may have at most {limit} bytes", param="file")

    async def room_left(self, user_id: int) -> int:
        """Bytes the user may still store before reaching the quota."""
        used = await transact(self.engine, lambda s: used_bytes(s, user_id))
        return max(0, self.settings.user_storage_quota_bytes - used)

    def quota_exceeded(self) -> QuotaExceeded:
        quota = self.settings.user_storage_quota_bytes
        return QuotaExceeded(
            f"this upload would exceed your storage quota of {quota} bytes; "
            "delete files you no longer need"
        )

    async def spool_for(self, user_id: int, *, declared: int | None) -> Spool:
        """A spool that refuses bytes past both the file size limit and the user's quota.

        A declared size (Content-Length) over either is refused before anything is read.
        """
        room = await self.room_left(user_id)
        limit = self.settings.file_max_bytes
        if declared is not None and declared > limit + FORM_OVERHEAD:
            raise self.file_too_large()
        if declared is not None and declared > room + FORM_OVERHEAD:
            raise self.quota_exceeded()
        too_large = self.file_too_large if limit <= room else self.quota_exceeded
        return Spool(self.storage.spool_dir, limit=min(limit, room), too_large=too_large)

    # -- files ----------------------------------------------------------------------------------

    async def add(
        self,
        *,
        user_id: int,
        spooled: Spooled,
        filename: str,
        purpose: str,
        enforce_quota: bool = True,
    ) -> StoredFile:
        """Store a spooled file as a new file of ``user_id``; the spool file is consumed.
        Without ``enforce_quota`` it is stored whatever the user's quota says (the results of
        work already paid for, such as a batch's output)."""
        key = secrets.token_hex(16)
        try:
            await self.storage.put(key, spooled.path)
        finally:
            spooled.path.unlink(missing_ok=True)
        retention = self.settings.file_retention_days
        now = utcnow()
        file = StoredFile(
            id=new_id("file"),
            user_id=user_id,
            filename=filename,
            purpose=purpose,
            bytes=spooled.size,
            content_type=content_type_for(spooled.head),
            sha256=spooled.sha256,
            storage_key=key,
            created_at=now,
            expires_at=now + timedelta(days=retention) if retention is not None else None,
        )
        quota = self.settings.user_storage_quota_bytes

        def insert(session: Session) -> StoredFile:
            # The owner's row is locked (on PostgreSQL) so two uploads cannot both take the
            # last of the quota.
            session.execute(select(User.id).where(User.id == user_id).with_for_update())
            if enforce_quota and used_bytes(session, user_id) + file.bytes > quota:
                raise self.quota_exceeded()
            session.add(file)
            return file

        try:
            return await transact(self.engine, insert)
        except BaseException:
            await self.discard(key)
            raise

    async def page(
        self,
        *,
        user_id: int,
        limit: int,
        after: str | None,
        ascending: bool,
        purpose: str | None,
    ) -> tuple[list[StoredFile], bool]:
        """A page of the user's live files, newest first unless ``ascending``; and whether
        more follow. ``after`` is the id of the last file of the previous page."""

        def work(session: Session) -> tuple[list[StoredFile], bool]:
            query = select(StoredFile).where(StoredFile.user_id == user_id, _live(utcnow()))
            if purpose:
                query = query.where(StoredFile.purpose == purpose)
            if after:
                cursor = session.get(StoredFile, after)
                if cursor is None or cursor.user_id != user_id:
                    raise NotFound(f"no file with id {after}", param="after")
                key = (StoredFile.created_at, StoredFile.id)
                mark = (cursor.created_at, cursor.id)
                query = query.where(
                    or_(key[0] > mark[0], (key[0] == mark[0]) & (key[1] > mark[1]))
                    if ascending
                    else or_(key[0] < mark[0], (key[0] == mark[0]) & (key[1] < mark[1]))
                )
            order = (
                (StoredFile.created_at.asc(), StoredFile.id.asc())
                if ascending
                else (StoredFile.created_at.desc(), StoredFile.id.desc())
            )
            rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
            return rows[:limit], len(rows) > limit

        return await transact(self.engine, work)

    async def get(self, *, user_id: int, file_id: str) -> StoredFile:
        """The user's live file ``file_id``; anything else is NotFound, worded the same."""
        file = await transact(self.engine, lambda s: s.get(StoredFile, file_id))
        if file is None or file.user_id != user_id or not _is_live(file):
            raise missing(file_id)
        return file

    async def get_shared(self, file_id: str) -> StoredFile:
        """A live file by id alone, for its public preview."""
        file = await transact(self.engine, lambda s: s.get(StoredFile, file_id))
        if file is None or not _is_live(file):
            raise missing(file_id)
        return file

    async def open(
        self, file: StoredFile, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        return await self.storage.open(file.storage_key, start, end)

    async def delete(self, *, user_id: int, file_id: str) -> None:
        def work(session: Session) -> str | None:
            file = session.get(StoredFile, file_id)
            if file is None or file.user_id != user_id or not _is_live(file):
                return None
            session.delete(file)
            return file.storage_key

        key = await transact(self.engine, work)
        if key is None:
            raise missing(file_id)
        await self.discard(key)

    async def discard(self, key: str) -> None:
        """Remove bytes whose row is gone; a failure leaves an orphan for the log, not an error."""
        try:
            await self.storage.delete(key)
        except Exception:
            log.warning("could not delete stored object %s", key, exc_info=True)

    # -- retention and administration -----------------------------------------------------------

    async def purge_expired(self, now: datetime | None = None) -> tuple[int, int]:
        """Delete expired files, and expired unfinished uploads with their parts.

        Returns (files, uploads) removed. Safe to run in several processes at once.
        """
        moment = now or utcnow()

        def work(session: Session) -> tuple[list[str], list[str], int]:
            files = list(
                session.scalars(
                    select(StoredFile)
                    .where(StoredFile.expires_at.is_not(None), StoredFile.expires_at <= moment)
                    .limit(MAX_LIST)
                )
            )
            for file in files:
                session.delete(file)
            stale = list(
                session.scalars(
                    select(Upload)
                    .where(
                        Upload.status.in_(("pending", "completing")), Upload.expires_at <= moment
                    )
                    .limit(MAX_LIST)
                )
            )
            parts = [part.storage_key for upload in stale for part in upload.parts]
            for upload in stale:
                upload.status = "expired"
            if stale:
                session.execute(
                    delete(UploadPart).where(UploadPart.upload_id.in_([u.id for u in stale]))
                )
            return [f.storage_key for f in files] + parts, [u.id for u in stale], len(files)

        keys, uploads, files = await transact(self.engine, work)
        for key in keys:
            await self.discard(key)
        return files, len(uploads)

    async def storage_use(self) -> list[StorageUse]:
        """Files and bytes per user, largest first."""

        def work(session: Session) -> list[StorageUse]:
            rows = session.execute(
                select(
                    User.id,
                    User.username,
                    func.count(StoredFile.id),
                    func.coalesce(func.sum(StoredFile.bytes), 0),
                )
                .join(StoredFile, StoredFile.user_id == User.id)
                .group_by(User.id, User.username)
                .order_by(func.sum(StoredFile.bytes).desc())
            )
            return [StorageUse(row[0], row[1], int(row[2]), int(row[3])) for row in rows]

        return await transact(self.engine, work)


def missing(file_id: str) -> NotFound:
    shown = file_id if len(file_id) <= 64 else file_id[:64] + "…"
    return NotFound(f"No such File object: {shown}", param="file_id")


def used_bytes(session: Session, user_id: int) -> int:
    """The user's stored bytes: files and the parts of unfinished uploads. The parts of an
    upload being completed are left out: they are about to become the file being added."""
    files = session.scalar(
        select(func.coalesce(func.sum(StoredFile.bytes), 0)).where(StoredFile.user_id == user_id)
    )
    parts = session.scalar(
        select(func.coalesce(func.sum(UploadPart.bytes), 0))
        .join(Upload, Upload.id == UploadPart.upload_id)
        .where(Upload.user_id == user_id, Upload.status != "completing")
    )
    return int(files or 0) + int(parts or 0)


def _live(now: datetime) -> ColumnElement[bool]:
    return or_(StoredFile.expires_at.is_(None), StoredFile.expires_at > now)


def _is_live(file: StoredFile) -> bool:
    return file.expires_at is None or file.expires_at > utcnow()
