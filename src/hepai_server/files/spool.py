"""Spool: incoming file bytes written to a staging file, hashed and size-checked on the way.

A body is never held whole in memory: bytes are gathered into 1 MiB blocks and each block is
written and hashed in a thread, so a 150 MB upload costs a few megabytes of memory and no
stall of the event loop. Past its limit a spool refuses more bytes with the error it was given
and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hepai_server.errors import HepAIError

BLOCK = 1024 * 1024
#: Enough of the start of a file to recognise any image format the preview serves inline.
HEAD_BYTES = 64


@dataclass(frozen=True, slots=True)
class Spooled:
    """A finished spool file and what was learnt while writing it."""

    path: Path
    size: int
    md5: str
    sha256: str
    head: bytes


class Spool:
    """One staging file; use as ``async with Spool(...) as spool`` so a failure removes it."""

    def __init__(self, directory: Path, *, limit: int, too_large: Callable[[], HepAIError]) -> None:
        self.path = directory / f"{secrets.token_hex(16)}.part"
        self._limit = limit
        self._too_large = too_large
        self._handle: BinaryIO | None = None
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self._pending = bytearray()
        self._head = b""
        self.size = 0
        self._kept = False

    async def __aenter__(self) -> Spool:
        self._handle = await asyncio.to_thread(self.path.open, "xb")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            await asyncio.to_thread(self._handle.close)
        if not self._kept:
            self.path.unlink(missing_ok=True)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        self.size += len(data)
        if self.size > self._limit:
            raise self._too_large()
        if len(self._head) < HEAD_BYTES:
            self._head += bytes(data[: HEAD_BYTES - len(self._head)])
        self._pending += data
        if len(self._pending) >= BLOCK:
            await self._flush()

    async def _flush(self) -> None:
        block, self._pending = bytes(self._pending), bytearray()
        if block:
            await asyncio.to_thread(self._write_block, block)

    def _write_block(self, block: bytes) -> None:
        assert self._handle is not None
        self._handle.write(block)
        self._md5.update(block)
        self._sha256.update(block)

    async def finish(self) -> Spooled:
        """Flush and close; the file now belongs to the caller (usually ``Storage.put``)."""
        await self._flush()
        assert self._handle is not None
        await asyncio.to_thread(self._handle.close)
        self._handle = None
        self._kept = True
        return Spooled(
            path=self.path,
            size=self.size,
            md5=self._md5.hexdigest(),
            sha256=self._sha256.hexdigest(),
            head=self._head,
        )
