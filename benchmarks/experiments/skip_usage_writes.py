"""Upper bound only: usage rows are gathered as usual but never written to the database.

It shows what the batch writer (SQLAlchemy + the database driver, in a thread) costs; the
gateway must of course keep writing them.
"""

from __future__ import annotations

from typing import Any

from hepai_server.gateway import usage


def _discard(self: usage.UsageRecorder, rows: list[dict[str, Any]]) -> None:
    del self, rows


usage.UsageRecorder._write = _discard  # type: ignore[method-assign]
