"""A worker built with the hepai SDK itself (HRModel + HWorkerAPP), as users deploy them.

Run: python -m tests.workers.hepai_calculator PORT CONTROLLER_URL NAME PERMISSIONS [WORKER_ID]
with HEPAI_API_KEY set to the owner's key; it registers, heartbeats and serves until killed.
"""

from __future__ import annotations

import asyncio
import base64
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
    def chat_completions(self, **request: Any) -> Any:
        """An OpenAI-style LLM method: the platform passes the request body as kwargs."""
        from hepai import get_remote_call_context

        caller = get_remote_call_context().username
        words = [f"{self.name}-says-{i} " for i in range(2)] + [f"to-{caller} "]
        usage = {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
        base = {"id": "chatcmpl-w", "created": 1, "model": request["model"]}
        if not request.get("stream"):
            message = {"role": "assistant", "content": "".join(words)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return {**base, "object": "chat.completion", "choices": [choice], "usage": usage}

        def chunks() -> Iterator[bytes]:
            for word in words:
                delta = {"index": 0, "delta": {"content": word}, "finish_reason": None}
                chunk = {**base, "object": "chat.completion.chunk", "choices": [delta]}
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            if (request.get("stream_options") or {}).get("include_usage"):
                chunk = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return chunks()

    @HRModel.remote_callable
    def anthropic_messages(self, **request: Any) -> dict[str, Any]:
        """A worker that speaks Anthropic Messages itself."""
        return {
            "id": "msg_w",
            "type": "message",
            "role": "assistant",
            "model": request["model"],
            "content": [{"type": "text", "text": f"{self.name} speaks messages"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 2, "output_tokens": 4},
        }

    @HRModel.remote_callable
    def embeddings(self, **request: Any) -> dict[str, Any]:
        inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(text)), 0.5]}
            for i, text in enumerate(inputs)
        ]
        usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
        return {"object": "list", "data": data, "model": request["model"], "usage": usage}

    @HRModel.remote_callable
    def file_info(self, **kwargs: Any) -> dict[str, Any]:
        """What a multipart call delivered: the other kwargs and the decoded files."""
        envelope = kwargs.pop("_hepai_multipart")
        files = [
            {
                **{k: v for k, v in f.items() if k != "content_base64"},
                "text": base64.b64decode(f["content_base64"]).decode(),
            }
            for f in envelope["files"]
        ]
        return {"kwargs": kwargs, "version": envelope["version"], "files": files}

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
