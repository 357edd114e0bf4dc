"""What if the gateway called gc.freeze() once started?

The ~100k objects alive after startup (SQLAlchemy, pydantic, Starlette, the catalog) move to
the permanent generation, so a full collection no longer walks them all.
"""

from __future__ import annotations

import gc
from typing import Any

from hepai_server.gateway import runtime

_start = runtime.Gateway.start.__func__  # type: ignore[attr-defined]


async def _start_then_freeze(cls: type[runtime.Gateway], *args: Any) -> runtime.Gateway:
    gateway: runtime.Gateway = await _start(cls, *args)
    gc.collect()
    gc.freeze()
    return gateway


runtime.Gateway.start = classmethod(_start_then_freeze)  # type: ignore[method-assign,assignment]
