"""The platform's own workers, deployed with ``hepai-server worker run builtin:NAME``."""

from __future__ import annotations

#: NAME → the module:Class that serves it.
BUILTINS = {
    "embeddings": "hepai_server.worker.builtin.embeddings:Embeddings",
    "rerank": "hepai_server.worker.builtin.rerank:Rerank",
    "markitdown": "hepai_server.worker.builtin.markitdown:MarkItDownWorker",
    "mineru": "hepai_server.worker.builtin.mineru:MinerUWorker",
}
