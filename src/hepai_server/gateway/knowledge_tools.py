"""PlatformTools: the knowledge service's tools (knowledge/tools.py) as calls into this
platform: documents converted by its document tools through the dispatcher, texts embedded
and reranked by its models through the proxy, each as the user it is for.

Why through the workers rather than the same conversion code in this process: the gateway
then stays free of the document libraries and torch, a crafted document is converted in the
worker's isolated child where it cannot take the gateway down, and a conversion is routed,
permitted, spread over the tool's workers and billed exactly as the user's own call of that
tool would be. Plain text and markdown need no tool and are read directly.

Every step is a call of its own, in an ``Exchange`` as every request is: admitted against
the user's budgets and rate limits (a spent budget stops ingestion too), journaled, and ending
in one usage row (``Exchange.finish``) with a request id of its own. The endpoint names the
step (``knowledge.convert``, ``knowledge.embed``, ``vector_stores.search``), the model the tool
or model that did it, and the row's ``client_request_id`` the request it was taken for (the
ingestion's, or the search's or chat's that asked).
"""

from __future__ import annotations

import io
from time import perf_counter
from typing import Any

import orjson

from hepai_server.db.tables import StoredFile
from hepai_server.errors import HepAIError, ModelNotFound, ServiceUnavailable, UpstreamError
from hepai_server.gateway.asgi import new_request_id
from hepai_server.gateway.catalog import Model
from hepai_server.gateway.frame import Exchange
from hepai_server.gateway.proxy import Call, Outcome
from hepai_server.gateway.runtime import Gateway
from hepai_server.knowledge.index import Vector, as_vector
from hepai_server.knowledge.tools import Converted, Progress, ToolFailed
from hepai_server.protocol.openai import EMBEDDINGS, RERANK, Endpoint, Usage
from hepai_server.services.accounts import Caller

#: Texts per embeddings call: one request stays well within any upstream's limits.
EMBED_BATCH = 64
TEXT_SUFFIXES = {"md", "markdown", "txt"}


class PlatformTools:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _exchange(self, for_request: str, endpoint: str, model: str) -> Exchange:
        exchange = Exchange(
            self.gateway, new_request_id(), perf_counter(), {}, endpoint, for_request
        )
        exchange.model = model
        return exchange

    # -- documents ------------------------------------------------------------------------------

    async def convert(self, caller: Caller, file: StoredFile, request_id: str) -> Converted:
        suffix = file.filename.rsplit(".", 1)[-1].lower() if "." in file.filename else ""
        if suffix in TEXT_SUFFIXES:
            chunks = [chunk async for chunk in await self.gateway.files.open(file)]
            return Converted(b"".join(chunks).decode("utf-8", "replace"), None)
        settings = self.gateway.settings
        if suffix == "pdf":
            try:
                answer = await self._tool(caller, settings.mineru_model_name, file, request_id)
                texts = [str(page) for page in answer.get("pages") or [answer["markdown"]]]
                marked = "\n\n".join(
                    f"<!-- page: {number} -->\n\n{text}" for number, text in enumerate(texts, 1)
                )
                return Converted(marked, len(texts))
            except (ModelNotFound, ServiceUnavailable):
                pass  # no layout-aware tool here: markitdown reads PDFs too
        answer = await self._tool(caller, settings.markitdown_model_name, file, request_id)
        metadata = answer.get("metadata") or {}
        pages = metadata.get("pages") if isinstance(metadata, dict) else None
        return Converted(
            str(answer.get("markdown") or ""), pages if isinstance(pages, int) else None
        )

    async def _tool(
        self, caller: Caller, model: str, file: StoredFile, request_id: str
    ) -> dict[str, Any]:
        """The tool's ``convert`` of the file, called as ``caller``, who owns it."""
        exchange = self._exchange(request_id, "knowledge.convert", model)
        outcome = exchange.outcome
        try:
            pages = self.gateway.settings.tool_pages_estimate
            await exchange.admit(caller, prompt=0, output=0, embedding=False, pages=pages)
            dispatcher = self.gateway.dispatcher
            routes = await dispatcher.routes(caller, model)
            body = io.BytesIO(orjson.dumps({"kwargs": {"file_id": file.id}}))
            body.seek(0, io.SEEK_END)
            answer = await dispatcher.call(
                caller,
                routes,
                model=model,
                function="convert",
                body=body,
                request_id=exchange.request_id,
            )
            try:
                raw = await answer.response.read()
            finally:
                answer.response.release()
            response = answer.response
            outcome.served_by, outcome.status = answer.worker_id, response.status
            outcome.usage = Usage.from_tool_header(response.headers.get("x-hepai-usage"))
        except HepAIError as error:
            outcome.fail(error.status, error.message)
            exchange.finish(caller)
            raise
        exchange.finish(caller)
        if response.status != 200:
            message = detail_of(raw)
            outcome.error = message
            if response.status in (400, 413, 415, 422):
                raise ToolFailed("unsupported_file", f"{model}: {message}")
            if response.status in (404, 403):
                raise ModelNotFound(model)
            raise UpstreamError(f"{model} answered {response.status}: {message}")
        parsed = orjson.loads(raw)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("markdown"), str):
            raise UpstreamError(f"{model} answered without markdown")
        return parsed

    # -- models ---------------------------------------------------------------------------------

    async def _model(
        self, caller: Caller, model_id: str, endpoint: Endpoint, request_id: str
    ) -> Model:
        gateway = self.gateway
        if model_id in gateway.catalog.ids():
            return gateway.catalog.resolve(model_id, caller)
        return await gateway.dispatcher.model(caller, model_id, endpoint, request_id)

    async def _call(
        self,
        exchange: Exchange,
        caller: Caller,
        endpoint: Endpoint,
        model: Model,
        body: dict[str, Any],
    ) -> dict[str, Any]:
        call = Call.create(
            request_id=exchange.request_id,
            caller=caller,
            endpoint=endpoint,
            model=model,
            body=body,
            started=exchange.started,
        )
        step = Outcome()
        raw = await self.gateway.proxy.fetch(call, step)
        outcome = exchange.outcome
        outcome.served_by = step.served_by
        total = outcome.usage or Usage(prompt_tokens=0, total_tokens=0)
        found = step.usage or Usage()
        total.prompt_tokens = (total.prompt_tokens or 0) + (found.prompt_tokens or 0)
        total.total_tokens = (total.total_tokens or 0) + (found.total_tokens or 0)
        outcome.usage = total
        parsed: dict[str, Any] = orjson.loads(raw)
        return parsed

    async def embed(
        self,
        caller: Caller,
        model: str,
        texts: list[str],
        request_id: str,
        *,
        endpoint: str,
        progress: Progress | None = None,
    ) -> list[Vector]:
        exchange = self._exchange(request_id, endpoint, model)
        vectors: list[Vector] = []
        try:
            resolved = await self._model(caller, model, EMBEDDINGS, request_id)
            prompt = sum(map(len, texts)) // 4 + 1
            await exchange.admit(caller, prompt=prompt, output=0, embedding=True)
            for start in range(0, len(texts), EMBED_BATCH):
                batch = texts[start : start + EMBED_BATCH]
                answer = await self._call(
                    exchange,
                    caller,
                    EMBEDDINGS,
                    resolved,
                    {"model": model, "input": batch, "encoding_format": "float"},
                )
                rows = sorted(answer.get("data") or [], key=lambda row: row.get("index", 0))
                if len(rows) != len(batch):
                    raise UpstreamError(
                        f"{model} answered {len(rows)} vectors for {len(batch)} texts"
                    )
                vectors += [as_vector(row["embedding"]) for row in rows]
                if progress is not None:
                    await progress(len(vectors), len(texts))
        except HepAIError as error:
            exchange.outcome.fail(error.status, error.message)
            raise
        except Exception:
            exchange.outcome.fail(500, "internal error")
            raise
        finally:
            exchange.finish(caller)
        return vectors

    async def rerank(
        self, caller: Caller, model: str, query: str, documents: list[str], request_id: str
    ) -> list[float]:
        exchange = self._exchange(request_id, "knowledge.rerank", model)
        try:
            resolved = await self._model(caller, model, RERANK, request_id)
            prompt = (len(query) + sum(map(len, documents))) // 4 + 1
            await exchange.admit(caller, prompt=prompt, output=0, embedding=False)
            answer = await self._call(
                exchange,
                caller,
                RERANK,
                resolved,
                {"model": model, "query": query, "documents": documents},
            )
        except HepAIError as error:
            exchange.outcome.fail(error.status, error.message)
            raise
        except Exception:
            exchange.outcome.fail(500, "internal error")
            raise
        finally:
            exchange.finish(caller)
        scores = [0.0] * len(documents)
        for row in answer.get("results") or []:
            scores[int(row["index"])] = float(row["relevance_score"])
        return scores


def detail_of(raw: bytes) -> str:
    """The message of a worker's error body ({"detail": …} or OpenAI's error)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:300].decode("utf-8", "replace")
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        if body.get("detail"):
            return str(body["detail"])[:500]
    return raw[:300].decode("utf-8", "replace")
