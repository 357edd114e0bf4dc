"""Embeddings: the built-in worker that answers OpenAI's /embeddings from a local model.

Deployed with ``hepai-server worker run builtin:embeddings``; the platform routes
``POST /apiv2/embeddings`` for its model id here. By default it serves all-MiniLM-L6-v2 from a
package that ships the weights (384 dimensions, unit vectors); in production point
``HEPAI_SERVER_EMBEDDING_MODEL_PATH`` at any sentence-transformers directory (bge-m3).
"""

from __future__ import annotations

import base64
from typing import Any

from hepai_server.config import Settings
from hepai_server.worker.builtin.encoder import TextEncoder, Vectors, packaged_minilm
from hepai_server.worker.model import Worker, remote

#: OpenAI's own limit on inputs per request.
MAX_INPUTS = 2048
MAX_INPUT_CHARS = 100_000


def texts_of(value: Any, *, param: str = "input") -> list[str]:
    """The request's texts. Token-id inputs are refused: they belong to another tokenizer."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"'{param}' must be a string or a non-empty array of strings")
    if len(texts) > MAX_INPUTS:
        raise ValueError(f"'{param}' may hold at most {MAX_INPUTS} texts")
    if any(len(text) > MAX_INPUT_CHARS for text in texts):
        raise ValueError(f"each text in '{param}' may have at most {MAX_INPUT_CHARS} characters")
    return texts


def encoded(vector: Vectors, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        little_endian = vector.astype("<f4", copy=False)
        return base64.b64encode(little_endian.tobytes()).decode()
    return [float(x) for x in vector]


class Embeddings(Worker):
    """Text embeddings (OpenAI's /embeddings), batched across concurrent calls."""

    description = "Text embeddings from a sentence-transformers model"
    concurrency = 64

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self.name = settings.embedding_model_name
        self.permission = settings.builtin_permission
        path = settings.embedding_model_path or packaged_minilm()
        self.encoder = TextEncoder(path, batch_size=settings.embedding_batch_size)

    @remote
    async def embeddings(self, **request: Any) -> dict[str, Any]:
        """OpenAI's embeddings request in, its response out (float or base64)."""
        texts = texts_of(request.get("input"))
        encoding_format = request.get("encoding_format") or "float"
        if encoding_format not in ("float", "base64"):
            raise ValueError("'encoding_format' must be 'float' or 'base64'")
        dimensions = request.get("dimensions")
        if dimensions is not None and dimensions != self.encoder.dimension:
            raise ValueError(f"this model makes {self.encoder.dimension}-dimensional vectors only")
        vectors, tokens = await self.encoder.encode(texts)
        return {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": encoded(vector, encoding_format),
                }
                for index, vector in enumerate(vectors)
            ],
            "model": self.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
