"""A generation counter shared by every process on this machine, to invalidate caches at once.

Processes map one 8-byte file into memory; reading the counter is a memory load, so the hot path
can check it on every request. Whoever changes a fact that processes cache (revokes a key, disables
a user) bumps it, and every process drops its cache before its next request.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_SIZE = 8


class Generation:
    """The counter in ``path``; create it if missing."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with _locked(fd):
                if os.fstat(fd).st_size < _SIZE:
                    os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)

    def read(self) -> int:
        return int.from_bytes(self._map[:_SIZE], "little")

    def bump(self) -> int:
        fd = os.open(self.path, os.O_RDWR)
        try:
            with _locked(fd):
                value = int.from_bytes(os.pread(fd, _SIZE, 0), "little") + 1
                os.pwrite(fd, value.to_bytes(_SIZE, "little"), 0)
                return value
        finally:
            os.close(fd)

    def close(self) -> None:
        self._map.close()


@contextmanager
def _locked(fd: int) -> Iterator[None]:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
