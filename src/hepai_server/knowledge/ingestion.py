"""Ingestion: a platform file made into a store's searchable chunks, as a background job.

Convert (the document tool for the file's kind, as the store's owner), chunk (chunking.py),
embed (the store's embedding model), index (the chunk index, replacing whatever an earlier
attempt left). The row of the store's file is the job's state: its ``stage`` tells people how
far it has come, the converted markdown is kept there until the chunks are indexed, so a run
resumed after a restart does not convert again, and its status says whether the job is still
owed. Running a job twice does no harm: a file that is no longer in progress is left alone,
and indexing replaces the file's chunks.

Each billable step is one usage row of the owner, written by the tools as for any request:
the conversion (pages and bytes) and the embedding (tokens).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hepai_server.config import Settings
from hepai_server.db.engine import transact
from hepai_server.db.tables import StoredFile, User, VectorStore, VectorStoreFile, utcnow
from hepai_server.errors import HepAIError
from hepai_server.jobs.runner import Job
from hepai_server.knowledge.chunking import Chunk, ChunkingStrategy, chunk_markdown
from hepai_server.knowledge.index import ChunkIndex, IndexedChunk, Vector, as_vector
from hepai_server.knowledge.lexical import Segmenter
from hepai_server.knowledge.stores import release, reserve_bytes, user_bytes
from hepai_server.knowledge.tools import ToolFailed, Tools
from hepai_server.services.accounts import Caller

log = logging.getLogger(__name__)

KIND = "knowledge.ingest"
#: Runs of one file that may end in a passing failure (a tool down) before it is failed.
MAX_ATTEMPTS = 3
#: Statuses of a tool or model that may pass: the job is tried again later.
PASSING = frozenset({429, 502, 503, 504})
#: A run renews its claim on the file this often; a claim older than LEASE_SECONDS is a run
#: that died (the process was killed), and the file may be taken up again.
HEARTBEAT_SECONDS, LEASE_SECONDS = 30.0, 90.0


def job_for(store_id: str, file_id: str) -> Job:
    return Job(KIND, f"{store_id}/{file_id}", {"store_id": store_id, "file_id": file_id})


@dataclass(frozen=True, slots=True)
class Work:
    """What one run needs, read from the database at its start."""

    store: VectorStore
    row: VectorStoreFile
    file: StoredFile
    owner: Caller


class Ingestion:
    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        index: ChunkIndex,
        segmenter: Segmenter,
        tools: Tools,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.index = index
        self.segmenter = segmenter
        self.tools = tools

    async def pending(self) -> list[Job]:
        """Every file the database says is still owed its ingestion."""
        rows = await transact(
            self.engine,
            lambda s: s.execute(
                select(VectorStoreFile.store_id, VectorStoreFile.file_id).where(
                    VectorStoreFile.status == "in_progress"
                )
            ).all(),
        )
        return [job_for(store_id, file_id) for store_id, file_id in rows]

    async def run(self, payload: dict[str, object]) -> None:
        """The job: ingest one file of one store (see the module's docstring)."""
        store_id, file_id = str(payload["store_id"]), str(payload["file_id"])
        work = await transact(self.engine, lambda s: self._begin(s, store_id, file_id))
        if work is None:
            return
        request_id = f"kb-{secrets.token_hex(8)}"
        heartbeat = asyncio.create_task(self._renew(work))
        try:
            await self._ingest(work, request_id)
        except ToolFailed as failure:
            await self._fail(work, failure.code, failure.message)
        except HepAIError as error:
            if error.status in PASSING and work.row.attempts < MAX_ATTEMPTS:
                await self._stage(work, f"waiting to retry: {error.message}"[:128])
                raise  # the job ends; the runner's recovery submits it again later
            code = (
                "rate_limit_exceeded"
                if error.status == 429
                else "server_error"
                if error.status >= 500
                else "invalid_file"
            )
            await self._fail(work, code, error.message)
        except Exception:
            log.exception("ingesting %s into %s failed", file_id, store_id)
            await self._fail(work, "server_error", "the file could not be processed")
        finally:
            heartbeat.cancel()

    async def _renew(self, work: Work) -> None:
        """Keep the claim on the file fresh while this run works on it."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            await self._update(work, lambda row: None)

    def _begin(self, session: Session, store_id: str, file_id: str) -> Work | None:
        """Claim the file for this run, unless it is done or another run holds it: several
        processes may each find the same unfinished file."""
        row = session.get(VectorStoreFile, (store_id, file_id))
        if row is None or row.status != "in_progress":
            return None
        now = utcnow()
        claimed = row.attempts > 0 and not row.stage.startswith("waiting")
        if claimed and row.updated_at > now - timedelta(seconds=LEASE_SECONDS):
            return None
        store = session.get(VectorStore, store_id)
        file = session.get(StoredFile, file_id)
        user = session.get(User, row.user_id)
        if store is None or file is None or user is None:
            return None
        row.attempts += 1
        row.updated_at = now
        owner = Caller(
            key_id=row.api_key_id or 0,
            user_id=user.id,
            username=user.username,
            email=user.email,
            is_admin=user.is_admin,
            groups=frozenset(group.name for group in user.groups),
            allowed_models=None,
            expires_at=None,
        )
        session.flush()
        session.expunge_all()
        return Work(store, row, file, owner)

    async def _ingest(self, work: Work, request_id: str) -> None:
        row = work.row
        markdown = row.markdown
        if markdown is None:
            await self._stage(work, "converting")
            converted = await self.tools.convert(work.owner, work.file, request_id)
            markdown = converted.markdown

            def keep(row_: VectorStoreFile) -> None:
                row_.markdown, row_.pages, row_.stage = markdown, converted.pages, "chunking"

            if not await self._update(work, keep):
                return
        strategy = ChunkingStrategy(row.max_chunk_tokens, row.chunk_overlap_tokens)
        chunks = await asyncio.to_thread(chunk_markdown, markdown, strategy)
        if not chunks:
            raise ToolFailed("invalid_file", f"no text was found in {work.file.filename}")
        size = sum(len(chunk.text.encode()) for chunk in chunks)
        if not await self._reserve(work, size):
            return  # deleted or cancelled meanwhile

        async def progress(done: int, total: int) -> None:
            await self._stage(work, f"embedding: {done} of {total} chunks")

        texts = [chunk.indexed_text() for chunk in chunks]
        vectors = await self.tools.embed(
            work.owner,
            work.store.embedding_model,
            texts,
            request_id,
            endpoint="knowledge.embed",
            progress=progress,
        )
        terms = await asyncio.to_thread(lambda: [self.segmenter.terms(t) for t in texts])
        await self._stage(work, "indexing")
        indexed = [
            indexed_chunk(ordinal, chunk, chunk_terms, vector)
            for ordinal, (chunk, chunk_terms, vector) in enumerate(
                zip(chunks, terms, vectors, strict=True)
            )
        ]
        await self.index.replace_file(work.store.id, work.file.id, indexed)

        def complete(row_: VectorStoreFile) -> None:
            row_.status, row_.stage, row_.last_error = "completed", "done", None
            row_.chunks, row_.usage_bytes, row_.markdown = len(chunks), size, None

        if not await self._update(work, complete):
            # Deleted or cancelled while it ran: what was just indexed must not stay.
            await self.index.remove_file(work.store.id, work.file.id)

    async def _reserve(self, work: Work, size: int) -> bool:
        """Hold the chunks' bytes of the owner's quota (``stores.reserve_bytes``) before the
        embedding: ingestions running at once each count the others'. False if the file is
        no longer in progress; over the quota, the file fails and says why."""
        quota = self.settings.knowledge_quota_bytes
        owner = work.owner.user_id

        def reserve(session: Session) -> tuple[bool, bool, int]:
            held = reserve_bytes(
                session,
                store_id=work.store.id,
                file_id=work.file.id,
                user_id=owner,
                size=size,
                quota=quota,
            )
            if held:
                return True, True, 0
            row = session.get(VectorStoreFile, (work.store.id, work.file.id))
            going = row is not None and row.status == "in_progress"
            return False, going, user_bytes(session, owner) - (row.usage_bytes if row else 0)

        held, going, used = await transact(self.engine, reserve)
        if held or not going:
            return held
        raise ToolFailed(
            "server_error",
            f"{work.file.filename} needs {size} bytes of chunks, and your vector stores "
            f"hold {used} of your quota of {quota}; delete files you no longer search",
        )

    async def _update(self, work: Work, change: Callable[[VectorStoreFile], None]) -> bool:
        """Apply ``change`` to the row if the file is still in progress; False if not."""

        def work_(session: Session) -> bool:
            row = session.get(VectorStoreFile, (work.store.id, work.file.id))
            if row is None or row.status != "in_progress":
                return False
            change(row)
            row.updated_at = utcnow()
            return True

        return await transact(self.engine, work_)

    async def _stage(self, work: Work, stage: str) -> None:
        def change(row: VectorStoreFile) -> None:
            row.stage = stage[:128]

        await self._update(work, change)

    async def _fail(self, work: Work, code: str, message: str) -> None:
        def change(row: VectorStoreFile) -> None:
            row.status, row.stage, row.markdown = "failed", "failed", None
            row.last_error = {"code": code, "message": message[:1000]}
            release(row)

        await self._update(work, change)
        await self.index.remove_file(work.store.id, work.file.id)


def indexed_chunk(ordinal: int, chunk: Chunk, terms: list[str], vector: Vector) -> IndexedChunk:
    return IndexedChunk(
        ordinal=ordinal,
        text=chunk.text,
        heading=chunk.heading,
        page=chunk.page,
        tokens=chunk.tokens,
        terms=terms,
        vector=as_vector(vector),
    )
