"""A worker built with the hepai SDK itself (HRModel + HWorkerAPP), as users deploy them.

Run: python -m tests.workers.hepai_calculator PORT CONTROLLER_URL NAME PERMISSIONS [WORKER_ID]
with HEPAI_API_KEY set to the owner's key; it registers, heartbeats and serves until killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

from hepai import HModelConfig, HRModel, HWorkerAPP, HWorkerConfig


class Calculator(HRModel):
    @HRModel.remote_callable
    def add(self, a: int, b: int = 2) -> int:
        return a + b

    @HRModel.remote_callable
    def half(self, x: float) -> float:
        return x / 2

    @HRModel.remote_callable
    def upto(self, n: int) -> list[int]:
        return list(range(n))

    @HRModel.remote_callable
    def describe(self) -> dict[str, Any]:
        return {"name": "calculator", "nested": {"ok": True}}

    @HRModel.remote_callable
    def nothing(self) -> None:
        return None

    @HRModel.remote_callable
    def count(self, n: int = 3, **kwargs: Any) -> Iterator[str]:
        for i in range(n):
            yield f"data: {json.dumps({'i': i})}\n\n"

    @HRModel.remote_callable
    async def acount(self, n: int = 3, **kwargs: Any) -> AsyncIterator[str]:
        # The SDK streams what an async method returns; an async generator function itself
        # would be taken for a plain function.
        async def numbers() -> AsyncIterator[str]:
            for i in range(n):
                await asyncio.sleep(0.01)
                yield f"data: {json.dumps({'i': i, 'async': True})}\n\n"

        return numbers()

    @HRModel.remote_callable
    def fail(self, message: str) -> None:
        raise ValueError(message)

    @HRModel.remote_callable
    def length(self, data: str) -> int:
        return len(data)

    @HRModel.remote_callable
    def pid(self) -> int:
        return os.getpid()

    @HRModel.remote_callable
    def whoami(self) -> dict[str, Any]:
        from hepai import get_remote_call_context

        context = get_remote_call_context()
        return {"username": context.username, "request_id": context.request_id}


def main() -> None:
    port, controller, name, permissions = sys.argv[1:5]
    worker_id = sys.argv[5] if len(sys.argv) > 5 else None
    model = Calculator(config=HModelConfig(name=name))
    config = HWorkerConfig(
        host="127.0.0.1",
        port=int(port),
        no_register=False,
        controller_address=controller,
        controller_prefix="/apiv2",
        permissions=permissions or None,
    )
    if worker_id:
        config.worker_id = worker_id  # type: ignore[attr-defined]  # read from config.__dict__
    app = HWorkerAPP(model, worker_config=config)
    app.run()


if __name__ == "__main__":
    main()
