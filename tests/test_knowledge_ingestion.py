"""Ingestion as a job, with stand-in tools: it completes, resumes from the database without
converting twice, retries a tool that is down, fails a refused document and a file over the
quota (files ingested at once included), and leaves a file another run holds alone."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from hepai_server.config import Settings
from hepai_server.db import migrate
from hepai_server.db.tables import StoredFile, VectorStore, VectorStoreFile, utcnow
from hepai_server.errors import ServiceUnavailable
from hepai_server.jobs.local import LocalRunner
from hepai_server.knowledge.chunking import ChunkingStrategy, chunk_markdown
from hepai_server.knowledge.service import Attachment, KnowledgeService, Search
from hepai_server.knowledge.sqlite_index import SqliteIndex
from hepai_server.knowledge.stores import release, reserve_bytes, user_bytes
from hepai_server.knowledge.tools import Converted, ToolFailed
from hepai_server.services import accounts

MARKDOWN = "# Report\n\n## Calibration\n\nThe calorimeter was calibrated with cosmic muons.\n"


class StandInTools:
    """Converts every file to MARKDOWN (or fails as told) and embeds by hashing words."""

    def __init__(self) -> None:
        self.conversions: list[str] = []
        self.failures: list[Exception] = []
        #: When set: each embedding says it began (``embedding``), then waits for ``gate``.
        self.embedding: asyncio.Event | None = None
        self.gate: asyncio.Event | None = None

    async def convert(self, caller: Any, file: StoredFile, request_id: str) -> Converted:
        self.conversions.append(file.id)
        if self.failures:
            raise self.failures.pop(0)
        return Converted(MARKDOWN, 1)

    async def embed(self, caller: Any, model: str, texts: list[str], request_id: str, **_: Any):
        if self.embedding is not None and self.gate is not None:
            self.embedding.set()
            await self.gate.wait()
        vectors = []
        for text in texts:
            vector = np.zeros(16, dtype=np.float32)
            for word in text.lower().split():
                vector[hashlib.sha256(word.encode()).digest()[0] % 16] += 1
            vectors.append(vector / max(float(np.linalg.norm(vector)), 1e-9))
        return vectors

    async def rerank(self, *args: Any) -> list[float]:
        raise AssertionError("no rerank model is configured")


class World:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        url = f"sqlite:///{tmp_path / 'hepai.db'}"
        migrate.upgrade(url)
        self.settings = Settings(data_dir=tmp_path, job_recovery_seconds=0.05, **settings)
        self.engine = create_engine(url)
        with Session(self.engine) as session:
            user = accounts.create_user(session, username="alice", password=None)
            _, _ = accounts.create_api_key(session, user=user)
            session.commit()
            self.caller = accounts.find_caller(session, accounts.list_api_keys(session)[0].key_hash)
        self.tools = StandInTools()
        self.runner = LocalRunner(concurrency=2, recovery_seconds=0.05)
        index = SqliteIndex(tmp_path / "knowledge.db")
        asyncio.run(index.prepare())
        self.service = KnowledgeService(
            settings=self.settings,
            engine=self.engine,
            index=index,
            tools=self.tools,
            runner=self.runner,
        )

    def add_file(self, name: str) -> str:
        file_id = "file-" + hashlib.sha256(name.encode()).hexdigest()[:32]
        with Session(self.engine) as session:
            session.add(stored_file(file_id, self.caller.user_id, name))
            session.commit()
        return file_id

    def row(self, store_id: str, file_id: str) -> VectorStoreFile:
        with Session(self.engine) as session:
            row = session.get(VectorStoreFile, (store_id, file_id))
            assert row is not None
            session.expunge(row)
            return row

    async def until_done(self, store_id: str, file_id: str) -> VectorStoreFile:
        for _ in range(400):
            row = self.row(store_id, file_id)
            if row.status != "in_progress":
                return row
            await asyncio.sleep(0.05)
        raise AssertionError(f"still in progress: {row.stage}")


def stored_file(file_id: str, user_id: int, name: str) -> StoredFile:
    """A platform file's row (the stand-in tools never read its content)."""
    return StoredFile(
        id=file_id,
        user_id=user_id,
        filename=name,
        purpose="assistants",
        bytes=10,
        content_type="text/plain",
        sha256="s",
        storage_key="k",
        created_at=utcnow(),
    )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    built = World(tmp_path)
    yield built
    built.engine.dispose()


def attach(world: World, store_id: str, file_id: str) -> Any:
    return world.service.attach_file(
        world.caller, store_id, Attachment(file_id, {}, ChunkingStrategy()), now=utcnow()
    )


async def new_store(world: World) -> str:
    store = await world.service.create_store(
        world.caller, name="s", metadata={}, expires_after_days=None, attachments=[], now=utcnow()
    )
    return store.id


def test_an_attached_file_is_converted_once_and_searchable(world: World) -> None:
    async def scenario() -> None:
        await world.runner.start()
        store = await new_store(world)
        file_id = world.add_file("report.docx")
        await attach(world, store, file_id)
        row = await world.until_done(store, file_id)
        assert (row.status, row.stage, row.chunks, row.markdown) == ("completed", "done", 1, None)
        assert row.usage_bytes == len(MARKDOWN.split("\n", 2)[2].strip().encode())
        hits = await world.service.search(
            world.caller, Search([store], "cosmic muons"), request_id="r", now=utcnow()
        )
        assert hits[0].file_id == file_id and hits[0].heading == "Report > Calibration"
        await attach(world, store, file_id)  # attaching again does nothing more
        await world.runner.idle()
        assert world.tools.conversions == [file_id]
        await world.service.close()

    asyncio.run(scenario())


def test_a_restart_resumes_from_the_kept_markdown(world: World) -> None:
    async def scenario() -> None:
        store = await new_store(world)
        file_id = world.add_file("paper.pdf")
        await attach(world, store, file_id)  # submitted, but the runner is not running
        with Session(world.engine) as session:
            row = session.get(VectorStoreFile, (store, file_id))
            assert row is not None
            # As a run left it that converted, then died before indexing.
            row.markdown, row.stage, row.attempts = MARKDOWN, "embedding", 1
            row.updated_at = utcnow() - timedelta(minutes=10)
            session.commit()
        restarted = LocalRunner(concurrency=2, recovery_seconds=0.05)
        service = KnowledgeService(
            settings=world.settings,
            engine=world.engine,
            index=world.service.index,
            tools=world.tools,
            runner=restarted,
        )
        await restarted.start()
        row = await world.until_done(store, file_id)
        assert row.status == "completed" and row.attempts == 2
        assert world.tools.conversions == []
        await service.close()

    asyncio.run(scenario())


def test_a_file_another_run_holds_is_left_alone(world: World) -> None:
    async def scenario() -> None:
        store = await new_store(world)
        file_id = world.add_file("held.docx")
        await attach(world, store, file_id)
        with Session(world.engine) as session:
            row = session.get(VectorStoreFile, (store, file_id))
            assert row is not None
            row.stage, row.attempts, row.updated_at = "converting", 1, utcnow()
            session.commit()
        await world.service.ingestion.run({"store_id": store, "file_id": file_id})
        assert world.tools.conversions == []
        assert world.row(store, file_id).attempts == 1

    asyncio.run(scenario())


def test_a_tool_that_is_down_is_tried_again_and_a_refusal_fails(world: World) -> None:
    async def scenario() -> None:
        await world.runner.start()
        store = await new_store(world)
        world.tools.failures = [ServiceUnavailable("no worker of hepai/markitdown is alive")]
        flaky = world.add_file("flaky.docx")
        await attach(world, store, flaky)
        row = await world.until_done(store, flaky)
        assert row.status == "completed" and row.attempts == 2
        world.tools.failures = [ToolFailed("unsupported_file", "hepai/markitdown: not a DOCX")]
        refused = world.add_file("refused.docx")
        await attach(world, store, refused)
        row = await world.until_done(store, refused)
        assert row.status == "failed"
        assert row.last_error == {
            "code": "unsupported_file",
            "message": "hepai/markitdown: not a DOCX",
        }
        world.tools.failures = [ServiceUnavailable("down")] * 3
        gone = world.add_file("gone.docx")
        await attach(world, store, gone)
        row = await world.until_done(store, gone)
        assert (row.status, row.attempts, row.last_error["code"]) == ("failed", 3, "server_error")
        await world.service.close()

    asyncio.run(scenario())


def test_a_file_over_the_quota_fails_and_says_why(tmp_path: Path) -> None:
    world = World(tmp_path, knowledge_quota_bytes=20)

    async def scenario() -> None:
        await world.runner.start()
        store = await new_store(world)
        file_id = world.add_file("big.docx")
        await attach(world, store, file_id)
        row = await world.until_done(store, file_id)
        assert row.status == "failed" and "quota of 20" in row.last_error["message"]
        assert await world.service.index.count(store) == 0
        await world.service.close()

    asyncio.run(scenario())
    world.engine.dispose()


def test_files_ingested_at_once_share_the_quota(tmp_path: Path) -> None:
    """A file's chunks hold their bytes of the quota from the check on, not from the end: a
    second file checked while the first is still embedding counts the first's bytes."""
    size = sum(len(c.text.encode()) for c in chunk_markdown(MARKDOWN, ChunkingStrategy()))
    world = World(tmp_path, knowledge_quota_bytes=size * 3 // 2)  # room for one file

    async def scenario() -> None:
        world.tools.embedding, world.tools.gate = asyncio.Event(), asyncio.Event()
        await world.runner.start()
        store = await new_store(world)
        first, second = world.add_file("first.docx"), world.add_file("second.docx")
        await attach(world, store, first)
        await asyncio.wait_for(world.tools.embedding.wait(), 10)  # past its quota check
        await attach(world, store, second)
        refused = await world.until_done(store, second)
        assert refused.status == "failed" and f"hold {size} of" in refused.last_error["message"]
        assert world.row(store, first).status == "in_progress"
        world.tools.gate.set()
        done = await world.until_done(store, first)
        assert done.status == "completed" and done.usage_bytes == size
        with Session(world.engine) as session:
            assert user_bytes(session, world.caller.user_id) == size  # the failed one holds 0
        await world.service.close()

    asyncio.run(scenario())
    world.engine.dispose()


def test_a_reservation_counts_every_other_file_of_the_owner(
    migrated_url: str, tmp_path: Path
) -> None:
    """The one UPDATE that checks and holds the quota, on each database: another file's bytes
    (held or indexed) count, the file's own earlier hold does not, a file no longer in
    progress holds nothing."""
    engine = create_engine(migrated_url)
    name = f"q-{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:8]}"
    try:
        with Session(engine) as session:
            user = accounts.create_user(session, username=name, password=None)
            session.flush()
            store = VectorStore(id=f"vs_{name}", user_id=user.id, name="s", embedding_model="e")
            session.add(store)
            for file_id in ("a", "b"):
                session.add(stored_file(f"file-{name}-{file_id}", user.id, file_id))
                session.add(
                    VectorStoreFile(
                        store_id=store.id,
                        file_id=f"file-{name}-{file_id}",
                        user_id=user.id,
                        max_chunk_tokens=800,
                        chunk_overlap_tokens=400,
                    )
                )
            session.commit()
            user_id, store_id = user.id, store.id

        def reserve(file_id: str, size: int) -> bool:
            with Session(engine) as session:
                held = reserve_bytes(
                    session,
                    store_id=store_id,
                    file_id=f"file-{name}-{file_id}",
                    user_id=user_id,
                    size=size,
                    quota=100,
                )
                session.commit()
                return held

        assert reserve("a", 60)
        assert not reserve("b", 41)  # 60 held by a
        assert reserve("a", 70)  # a's own hold is replaced, not added to
        assert reserve("b", 30) and not reserve("b", 31)
        with Session(engine) as session:
            assert user_bytes(session, user_id) == 100
            row = session.get(VectorStoreFile, (store_id, f"file-{name}-a"))
            assert row is not None
            row.status = "failed"
            release(row)
            session.commit()
        assert not reserve("a", 1)  # no longer in progress
        assert reserve("b", 100)
    finally:
        engine.dispose()
