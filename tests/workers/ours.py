"""A worker built with hepai_server.worker, served by `hepai-server worker run`."""

from __future__ import annotations

import asyncio
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

from hepai_server.worker import Worker, current_call, remote


class Calculator(Worker):
    """Adds numbers and streams counts."""

    name = os.environ.get("TEST_WORKER_NAME", "tests/calculator")
    permission = os.environ.get("TEST_WORKER_PERMISSION", "")

    @remote
    def add(self, a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b

    @remote
    async def half(self, x: float) -> float:
        return x / 2

    @remote
    def upto(self, n: int) -> list[int]:
        return list(range(n))

    @remote
    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "nested": {"ok": True}}

    @remote
    def nothing(self) -> None:
        return None

    @remote
    def count(self, n: int = 3) -> Iterator[dict[str, int]]:
        for i in range(n):
            yield {"i": i}

    @remote
    async def acount(self, n: int = 3) -> AsyncIterator[dict[str, Any]]:
        for i in range(n):
            await asyncio.sleep(0.01)
            yield {"i": i, "async": True}

    @remote
    def fail(self, message: str) -> None:
        raise ValueError(message)

    @remote
    def later(self) -> None:
        raise NotImplementedError("not yet")

    @remote
    def whoami(self) -> dict[str, Any]:
        call = current_call()
        assert call is not None
        return {"username": call.username, "request_id": call.request_id}

    @remote
    def chat_completions(self, **request: Any) -> dict[str, Any]:
        """OpenAI chat only (no anthropic_messages): Anthropic clients get a translation."""
        message = {"role": "assistant", "content": f"{self.name} chats"}
        return {
            "id": "chatcmpl-ours",
            "object": "chat.completion",
            "created": 1,
            "model": request["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }

    def private(self) -> str:
        return "not remote"

    @remote
    def checksum(self, file_id: str) -> dict[str, Any]:
        """Read a platform file the caller passed, as the caller, and describe it."""
        call = current_call()
        assert call is not None
        content = call.read_file(file_id)
        return {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}

    @remote
    def peek_other(self, file_id: str, other_reversed: str) -> int:
        """Try to read another file, whose id the call hides (reversed) so that the call does
        not name it, with the call's grant; the status the platform answers."""
        other = other_reversed[::-1]
        call = current_call()
        assert call is not None and call.file_grant is not None
        request = urllib.request.Request(
            f"{call.platform_url}/files/{other}/content",
            headers={"authorization": f"Bearer {call.file_grant}"},
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as exc:
            return exc.code
        return 200
