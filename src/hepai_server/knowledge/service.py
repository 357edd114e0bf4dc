"""KnowledgeService: vector stores, their files and search, as the API and the portal use them.

Every operation takes the caller and, where time matters, the clock (``now``); stores are
checked with stores.py's rules (the owner changes, whom it is shared with reads, anyone else
gets 404). Attaching a file records it in progress and submits its ingestion job; the job
runner does the rest (ingestion.py). Search reads only stores the caller may read, and only
files whose ingestion completed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from hepai_server.config import Settings
from hepai_server.db.engine import transact
from hepai_server.db.tables import (
    StoredFile,
    VectorStore,
    VectorStoreFile,
    VectorStoreFileBatch,
)
from hepai_server.errors import InvalidRequest, NotFound
from hepai_server.files.service import missing as missing_file
from hepai_server.jobs.runner import JobRunner
from hepai_server.knowledge import stores
from hepai_server.knowledge.chunking import ChunkingStrategy
from hepai_server.knowledge.filters import matches
from hepai_server.knowledge.index import ChunkIndex, as_vector
from hepai_server.knowledge.ingestion import KIND, Ingestion, job_for
from hepai_server.knowledge.lexical import Segmenter
from hepai_server.knowledge.retrieval import Query, Ranked, retrieve
from hepai_server.knowledge.tools import Tools
from hepai_server.protocol.vector_stores import (
    FileCounts,
    SearchHit,
    StoreFacts,
    StoreFileFacts,
)
from hepai_server.services.accounts import Caller

T = TypeVar("T")
MAX_FILES_PER_BATCH = 500
MAX_RESULTS = 50


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file to attach, with its attributes and chunking."""

    file_id: str
    attributes: dict[str, Any]
    strategy: ChunkingStrategy


@dataclass(frozen=True, slots=True)
class Search:
    store_ids: list[str]
    query: str
    max_num_results: int = 10
    filters: dict[str, Any] | None = None
    score_threshold: float = 0.0
    rerank: bool = True


@dataclass(frozen=True, slots=True)
class NamedFile:
    """A store's file with the name its owner gave it, as the portal lists them."""

    facts: StoreFileFacts
    filename: str


class KnowledgeService:
    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        index: ChunkIndex,
        tools: Tools,
        runner: JobRunner,
        segmenter: Segmenter | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.index = index
        self.tools = tools
        self.runner = runner
        self.segmenter = segmenter or Segmenter()
        self.ingestion = Ingestion(
            settings=settings, engine=engine, index=index, segmenter=self.segmenter, tools=tools
        )
        runner.register(KIND, self.ingestion.run, self.ingestion.pending)

    async def _transact(self, work: Callable[[Session], T]) -> T:
        return await transact(self.engine, work)

    # -- stores ---------------------------------------------------------------------------------

    async def create_store(
        self,
        caller: Caller,
        *,
        name: str,
        metadata: dict[str, str],
        expires_after_days: int | None,
        attachments: Sequence[Attachment],
        now: datetime,
    ) -> StoreFacts:
        store = VectorStore(
            id=stores.new_id("vs"),
            user_id=caller.user_id,
            name=name,
            embedding_model=self.settings.knowledge_embedding_model,
            metadata_=metadata,
            shared_groups=[],
            shared_users=[],
            shared=False,
            expires_after_days=expires_after_days,
            created_at=now,
        )
        stores.touch(store, now)

        def work(session: Session) -> None:
            session.add(store)
            session.flush()
            for attachment in attachments:
                self._attach(session, caller, store, attachment, batch_id=None, now=now)

        await self._transact(work)
        await self._submit(store.id, [a.file_id for a in attachments])
        return await self.get_store(caller, store.id, now=now)

    async def list_stores(
        self,
        caller: Caller,
        *,
        limit: int,
        after: str | None,
        before: str | None,
        ascending: bool,
        now: datetime,
    ) -> tuple[list[StoreFacts], bool]:
        def work(session: Session) -> tuple[list[StoreFacts], bool]:
            found = stores.readable_stores(session, caller)
            if ascending:
                found.reverse()
            page, more = paginate(found, [s.id for s in found], limit, after, before)
            return stores.store_facts(session, page, now), more

        return await self._transact(work)

    async def get_store(self, caller: Caller, store_id: str, *, now: datetime) -> StoreFacts:
        def work(session: Session) -> StoreFacts:
            store = stores.readable(session, caller, store_id)
            return stores.store_facts(session, [store], now)[0]

        return await self._transact(work)

    async def own_stores(self, caller: Caller, *, now: datetime) -> list[StoreFacts]:
        """The caller's own stores, newest first (not those shared with them)."""

        def work(session: Session) -> list[StoreFacts]:
            query = select(VectorStore).where(VectorStore.user_id == caller.user_id)
            order = (VectorStore.created_at.desc(), VectorStore.id.desc())
            return stores.store_facts(session, list(session.scalars(query.order_by(*order))), now)

        return await self._transact(work)

    async def own_store(self, caller: Caller, store_id: str, *, now: datetime) -> StoreFacts:
        """One of the caller's own stores; any other id is missing (404)."""

        def work(session: Session) -> StoreFacts:
            return stores.store_facts(session, [stores.mine(session, caller, store_id)], now)[0]

        return await self._transact(work)

    async def own_files(self, caller: Caller, store_id: str) -> list[NamedFile]:
        """Every file of one of the caller's own stores with its name, newest first."""

        def work(session: Session) -> list[NamedFile]:
            store = stores.mine(session, caller, store_id)
            rows = session.execute(
                select(VectorStoreFile, StoredFile.filename)
                .join(StoredFile, StoredFile.id == VectorStoreFile.file_id)
                .where(VectorStoreFile.store_id == store.id)
                .order_by(VectorStoreFile.created_at.desc(), VectorStoreFile.file_id.desc())
            ).all()
            return [NamedFile(stores.file_facts(row), filename) for row, filename in rows]

        return await self._transact(work)

    async def usage_by_owner(self) -> list[stores.OwnerUsage]:
        """Every owner's stores, files and bytes, the largest first: for administrators (the
        caller checks that the viewer is one)."""
        return await self._transact(stores.usage_by_owner)

    async def update_store(
        self,
        caller: Caller,
        store_id: str,
        *,
        name: str | None,
        metadata: dict[str, str] | None,
        expires_after_days: int | None,
        change_expiry: bool,
        now: datetime,
    ) -> StoreFacts:
        """Change what is given: the name and metadata unless None, the expiry if
        ``change_expiry`` (to none when ``expires_after_days`` is None)."""

        def work(session: Session) -> StoreFacts:
            store = stores.owned(session, caller, store_id)
            if name is not None:
                store.name = name
            if metadata is not None:
                store.metadata_ = metadata
            if change_expiry:
                store.expires_after_days, store.expires_at = expires_after_days, None
            stores.touch(store, now)
            return stores.store_facts(session, [store], now)[0]

        return await self._transact(work)

    async def share_store(
        self, caller: Caller, store_id: str, *, groups: list[str], users: list[str], now: datetime
    ) -> StoreFacts:
        """Who may read and search the store besides its owner: replaces the earlier sharing."""

        def work(session: Session) -> StoreFacts:
            store = stores.owned(session, caller, store_id)
            store.shared_groups = sorted(set(groups))
            store.shared_users = sorted(set(users))
            store.shared = bool(groups or users)
            return stores.store_facts(session, [store], now)[0]

        return await self._transact(work)

    async def delete_store(self, caller: Caller, store_id: str) -> None:
        def work(session: Session) -> None:
            store = stores.owned(session, caller, store_id)
            session.execute(delete(VectorStoreFile).where(VectorStoreFile.store_id == store.id))
            session.execute(
                delete(VectorStoreFileBatch).where(VectorStoreFileBatch.store_id == store.id)
            )
            session.delete(store)

        await self._transact(work)
        await self.index.remove_store(store_id)

    # -- files ----------------------------------------------------------------------------------

    def _attach(
        self,
        session: Session,
        caller: Caller,
        store: VectorStore,
        attachment: Attachment,
        *,
        batch_id: str | None,
        now: datetime,
    ) -> VectorStoreFile:
        file = session.get(StoredFile, attachment.file_id)
        if file is None or file.user_id != caller.user_id:
            raise missing_file(attachment.file_id)
        row = session.get(VectorStoreFile, (store.id, file.id))
        if row is not None and row.status in ("in_progress", "completed"):
            row.attributes = attachment.attributes or row.attributes
            return row
        if row is None:
            row = VectorStoreFile(store_id=store.id, file_id=file.id, created_at=now)
            session.add(row)
        row.user_id, row.api_key_id, row.batch_id = store.user_id, caller.key_id, batch_id
        row.status, row.stage, row.last_error, row.markdown = "in_progress", "queued", None, None
        row.attributes = attachment.attributes
        row.max_chunk_tokens = attachment.strategy.max_tokens
        row.chunk_overlap_tokens = attachment.strategy.overlap_tokens
        row.chunks, row.usage_bytes, row.attempts, row.updated_at = 0, 0, 0, now
        stores.touch(store, now)
        session.flush()
        return row

    async def _submit(self, store_id: str, file_ids: Sequence[str]) -> None:
        for file_id in file_ids:
            await self.runner.submit(job_for(store_id, file_id))

    async def attach_file(
        self, caller: Caller, store_id: str, attachment: Attachment, *, now: datetime
    ) -> StoreFileFacts:
        def work(session: Session) -> StoreFileFacts:
            store = stores.owned(session, caller, store_id)
            return stores.file_facts(
                self._attach(session, caller, store, attachment, batch_id=None, now=now)
            )

        facts: StoreFileFacts = await self._transact(work)
        await self._submit(store_id, [attachment.file_id])
        return facts

    async def list_files(
        self,
        caller: Caller,
        store_id: str,
        *,
        limit: int,
        after: str | None,
        before: str | None,
        ascending: bool,
        status: str | None,
        batch_id: str | None = None,
    ) -> tuple[list[StoreFileFacts], bool]:
        def work(session: Session) -> tuple[list[StoreFileFacts], bool]:
            store = stores.readable(session, caller, store_id)
            query = select(VectorStoreFile).where(VectorStoreFile.store_id == store.id)
            if status:
                query = query.where(VectorStoreFile.status == status)
            if batch_id:
                query = query.where(VectorStoreFile.batch_id == batch_id)
            order = (VectorStoreFile.created_at, VectorStoreFile.file_id)
            query = query.order_by(*(o.asc() if ascending else o.desc() for o in order))
            rows = list(session.scalars(query))
            page, more = paginate(rows, [r.file_id for r in rows], limit, after, before)
            return [stores.file_facts(row) for row in page], more

        return await self._transact(work)

    async def get_file(self, caller: Caller, store_id: str, file_id: str) -> StoreFileFacts:
        def work(session: Session) -> StoreFileFacts:
            store = stores.readable(session, caller, store_id)
            return stores.file_facts(stores.store_file(session, store, file_id))

        return await self._transact(work)

    async def file_content(self, caller: Caller, store_id: str, file_id: str) -> list[str]:
        """The texts of the file's chunks, in reading order, as search returns them."""

        def work(session: Session) -> None:
            stores.store_file(session, stores.readable(session, caller, store_id), file_id)

        await self._transact(work)
        return [chunk.text for chunk in await self.index.file_chunks(store_id, file_id)]

    async def update_file(
        self, caller: Caller, store_id: str, file_id: str, *, attributes: dict[str, Any]
    ) -> StoreFileFacts:
        def work(session: Session) -> StoreFileFacts:
            store = stores.owned(session, caller, store_id)
            row = stores.store_file(session, store, file_id)
            row.attributes = attributes
            return stores.file_facts(row)

        return await self._transact(work)

    async def delete_file(self, caller: Caller, store_id: str, file_id: str) -> None:
        """Detach the file: its chunks leave the index (the platform file itself stays)."""

        def work(session: Session) -> None:
            store = stores.owned(session, caller, store_id)
            session.delete(stores.store_file(session, store, file_id))

        await self._transact(work)
        await self.index.remove_file(store_id, file_id)

    async def forget_file(self, user_id: int, file_id: str) -> None:
        """A platform file was deleted: its chunks leave every store it was in."""
        mine = (VectorStoreFile.file_id == file_id, VectorStoreFile.user_id == user_id)

        def work(session: Session) -> list[str]:
            found = list(session.scalars(select(VectorStoreFile.store_id).where(*mine)))
            session.execute(delete(VectorStoreFile).where(*mine))
            return found

        for store_id in await self._transact(work):
            await self.index.remove_file(store_id, file_id)

    # -- batches --------------------------------------------------------------------------------

    async def create_batch(
        self, caller: Caller, store_id: str, attachments: Sequence[Attachment], *, now: datetime
    ) -> dict[str, Any]:
        if not attachments or len(attachments) > MAX_FILES_PER_BATCH:
            raise InvalidRequest(
                f"a batch holds 1 to {MAX_FILES_PER_BATCH} files", param="file_ids"
            )
        batch = VectorStoreFileBatch(id=stores.new_id("vsfb"), store_id=store_id, created_at=now)

        def work(session: Session) -> None:
            store = stores.owned(session, caller, store_id)
            session.add(batch)
            for attachment in attachments:
                self._attach(session, caller, store, attachment, batch_id=batch.id, now=now)

        await self._transact(work)
        await self._submit(store_id, [a.file_id for a in attachments])
        return await self.get_batch(caller, store_id, batch.id)

    async def get_batch(self, caller: Caller, store_id: str, batch_id: str) -> dict[str, Any]:
        from hepai_server.protocol.vector_stores import batch_object

        def work(session: Session) -> dict[str, Any]:
            store = stores.readable(session, caller, store_id)
            batch = session.get(VectorStoreFileBatch, batch_id)
            if batch is None or batch.store_id != store.id:
                raise NotFound(f"No file batch found with id '{batch_id[:64]}'.")
            statuses = session.scalars(
                select(VectorStoreFile.status).where(VectorStoreFile.batch_id == batch_id)
            )
            counts: dict[str, int] = {}
            for status in statuses:
                counts[status] = counts.get(status, 0) + 1
            return batch_object(
                batch.id,
                store.id,
                batch.created_at,
                FileCounts(**counts),
                cancelled=batch.cancelled,
            )

        return await self._transact(work)

    async def cancel_batch(self, caller: Caller, store_id: str, batch_id: str) -> dict[str, Any]:
        def work(session: Session) -> list[str]:
            store = stores.owned(session, caller, store_id)
            batch = session.get(VectorStoreFileBatch, batch_id)
            if batch is None or batch.store_id != store.id:
                raise NotFound(f"No file batch found with id '{batch_id[:64]}'.")
            batch.cancelled = True
            cancelled = []
            for row in session.scalars(
                select(VectorStoreFile).where(
                    VectorStoreFile.batch_id == batch_id, VectorStoreFile.status == "in_progress"
                )
            ):
                row.status, row.stage, row.markdown = "cancelled", "cancelled", None
                stores.release(row)
                cancelled.append(row.file_id)
            return cancelled

        for file_id in await self._transact(work):
            await self.index.remove_file(store_id, file_id)
        return await self.get_batch(caller, store_id, batch_id)

    # -- search ---------------------------------------------------------------------------------

    async def search(
        self, caller: Caller, search: Search, *, request_id: str, now: datetime
    ) -> list[SearchHit]:
        """The chunks that best answer the query, from the stores given, as the caller may
        read them: hybrid retrieval, reranked when a rerank model is configured."""
        if not search.query.strip():
            raise InvalidRequest("'query' must not be empty", param="query")
        if not 1 <= search.max_num_results <= MAX_RESULTS:
            raise InvalidRequest(
                f"'max_num_results' must be from 1 to {MAX_RESULTS}", param="max_num_results"
            )

        def work(
            session: Session,
        ) -> tuple[dict[str, str], dict[tuple[str, str], tuple[str, dict[str, Any]]]]:
            models: dict[str, str] = {}
            for store_id in dict.fromkeys(search.store_ids):
                store = stores.readable(session, caller, store_id)
                if stores.is_expired(store, now):
                    raise InvalidRequest(
                        f"vector store {store_id} has expired", param="vector_store_ids"
                    )
                stores.touch(store, now)
                models[store.id] = store.embedding_model
            rows = session.execute(
                select(VectorStoreFile, StoredFile.filename)
                .join(StoredFile, StoredFile.id == VectorStoreFile.file_id)
                .where(
                    VectorStoreFile.store_id.in_(list(models)),
                    VectorStoreFile.status == "completed",
                )
            ).all()
            files = {
                (row.store_id, row.file_id): (filename, dict(row.attributes or {}))
                for row, filename in rows
            }
            return models, files

        models, files = await self._transact(work)
        allowed = {
            key: value
            for key, value in files.items()
            if search.filters is None or matches(search.filters, value[1])
        }
        if not allowed:
            return []
        by_model: dict[str, list[str]] = {}
        for store_id, model in models.items():
            by_model.setdefault(model, []).append(store_id)
        vectors = []
        for model, store_ids in by_model.items():
            [vector] = await self.tools.embed(
                caller, model, [search.query], request_id, endpoint="vector_stores.search"
            )
            vectors.append((store_ids, as_vector(vector)))
        rerank_model = self.settings.knowledge_rerank_model if search.rerank else None

        async def rerank(query: str, documents: list[str]) -> list[float]:
            assert rerank_model is not None
            return await self.tools.rerank(caller, rerank_model, query, documents, request_id)

        ranked: list[Ranked] = await retrieve(
            self.index,
            self.segmenter,
            Query(
                text=search.query,
                vectors=vectors,
                limit=search.max_num_results,
                candidates=max(self.settings.knowledge_candidates, search.max_num_results),
                file_ids=None if len(allowed) == len(files) else {f for _, f in allowed},
            ),
            rerank if rerank_model else None,
        )
        hits = []
        for item in ranked:
            chunk = item.chunk
            found = allowed.get((chunk.store_id, chunk.file_id))
            if found is None or item.score < search.score_threshold:
                continue
            hits.append(
                SearchHit(
                    file_id=chunk.file_id,
                    filename=found[0],
                    score=round(item.score, 6),
                    text=chunk.text,
                    attributes=found[1],
                    page=chunk.page,
                    heading=chunk.heading,
                    store_id=chunk.store_id,
                )
            )
        return hits

    async def close(self) -> None:
        await self.runner.close()
        await self.index.close()


def paginate(
    rows: list[Any], ids: list[str], limit: int, after: str | None, before: str | None
) -> tuple[list[Any], bool]:
    """OpenAI's cursor pagination over rows already in order: ``after``/``before`` an id."""
    start, end = 0, len(rows)
    if after:
        if after not in ids:
            raise InvalidRequest(f"no object with id {after[:64]} to list after", param="after")
        start = ids.index(after) + 1
    if before:
        if before not in ids:
            raise InvalidRequest(f"no object with id {before[:64]} to list before", param="before")
        end = ids.index(before)
        start = max(start, end - limit) if not after else start
    page = rows[start:end][:limit]
    if before and not after:
        return page, start > 0  # more lie further back, before this page
    return page, start + len(page) < end
