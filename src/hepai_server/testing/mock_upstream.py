"""A mock OpenAI-compatible upstream: streams, reports usage, and fails on command.

It stands in for a commercial provider in tests and benchmarks. A request steers it with an
extra ``"mock"`` object in its body (which the gateway passes through untouched):

    {"mock": {"status": 500}}            answer with that status and an OpenAI error body
    {"mock": {"chunks": 20}}             stream that many content chunks (default 5)
    {"mock": {"delay": 0.1}}             seconds before each chunk (or before the answer)
    {"mock": {"break_after": 3}}         stream that many chunks, then drop the connection
    {"mock": {"reasoning": true}}        stream reasoning_content deltas before the content
    {"mock": {"tool_call": true}}        answer with a tool call
    {"mock": {"tool_call": "once"}}      … unless the conversation has a tool's result already
    {"mock": {"usage": false}}           never report usage
    {"mock": {"reply": "text"}}          answer a chat with this text (streamed word by word)
    {"mock": {"done": false}}            end a stream without its [DONE]

Besides chat, completions, embeddings and rerank it serves Anthropic Messages and the Responses
API natively (replies that name themselves), audio transcription and translation (multipart,
read as it arrives; every response_format, and ``stream=true`` events), speech (audio bytes in
pieces) and image generation and edits (gpt-image-1's answers, with usage).

``GET /_mock/requests`` returns the recorded requests (path, headers, body),
``GET /_mock/events`` what happened to streams (finished, cancelled by the client), and
``GET /_mock/stats`` what it served in all: requests answered, and the prompt and completion
tokens it reported or streamed (a stream cut short counts the chunks it sent), and
``GET /_mock/served`` the same per request tagged ``{"mock": {"tag": ...}}``.
Run it with ``python -m hepai_server.testing.mock_upstream --port 9000``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import struct
import time
from collections import deque
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

#: Requests kept for tests to look at (a batch of 200 lines, and what runs beside it).
RECORDED = 2000
DIM = 8


class MockUpstream:
    def __init__(self, *, api_key: str | None = None, fail_status: int | None = None) -> None:
        self.api_key = api_key
        self.fail_status = fail_status
        self.requests: deque[dict[str, Any]] = deque(maxlen=RECORDED)
        self.events: deque[dict[str, Any]] = deque(maxlen=RECORDED)
        self.stats = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.tagged: dict[str, dict[str, int]] = {}
        #: Bytes of each uploaded file received so far, by file name, as they arrive.
        self.receiving: dict[str, int] = {}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/rerank", self.rerank)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_delete("/v1/responses/{response_id}", self.delete_response)
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        app.router.add_post("/v1/audio/translations", self.translations)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_post("/v1/images/generations", self.image_generations)
        app.router.add_post("/v1/images/edits", self.image_edits)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/_mock/requests", self.recorded)
        app.router.add_get("/_mock/events", self.recorded_events)
        app.router.add_get("/_mock/stats", self.served)
        app.router.add_get("/_mock/served", self.served_by_tag)
        app.router.add_post("/_mock/reset", self.reset)
        return app

    async def _record(self, request: web.Request) -> dict[str, Any]:
        """Read the JSON body and keep the request for /_mock/requests."""
        body: dict[str, Any] = orjson.loads(await request.read())
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append({"path": request.path, "headers": headers, "body": body})
        return body

    async def _accept(self, request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
        body = await self._record(request)
        if self.api_key is not None and request.headers.get("authorization") != (
            f"Bearer {self.api_key}"
        ):
            raise _Failure(401, "Incorrect API key provided.", "invalid_api_key")
        mock = body.get("mock") or {}
        status = mock.get("status", self.fail_status)
        if status:
            raise _Failure(status, f"mock failure {status}", "mock_failure")
        self.stats["requests"] += 1
        if (tag := mock.get("tag")) is not None:
            self.tagged[str(tag)] = {"prompt_tokens": 0, "completion_tokens": 0}
        if mock.get("delay") and not body.get("stream"):
            await asyncio.sleep(mock["delay"])
        return body, mock

    def _count(self, mock: dict[str, Any], kind: str, tokens: int) -> None:
        self.stats[kind] += tokens
        if (tag := mock.get("tag")) is not None and str(tag) in self.tagged:
            self.tagged[str(tag)][kind] += tokens

    def _served(self, mock: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
        self._count(mock, "prompt_tokens", usage.get("prompt_tokens", 0))
        self._count(mock, "completion_tokens", usage.get("completion_tokens", 0))
        return usage

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, mock = await self._accept(request)
        words = _words(body)
        n = body.get("n") or 1
        if mock.get("tool_call") == "once" and _has_tool_result(body):
            mock = {**mock, "tool_call": False}
        if body.get("stream"):
            return await self._stream(request, body, mock, words, chat=True)
        reply = _reply(mock)
        choices = []
        for index in range(n):
            message: dict[str, Any] = {"role": "assistant", "content": reply}
            if mock.get("reasoning"):
                message["reasoning_content"] = "thinking it over"
            if mock.get("tool_call"):
                message["content"] = None
                message["tool_calls"] = [_tool_call()]
            choices.append(
                {"index": index, "message": message, "finish_reason": "stop", "logprobs": None}
            )
        completion = len(reply.split()) * n
        return _json(
            {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": choices,
                "usage": self._served(
                    mock, _usage(words, completion, reasoning=bool(mock.get("reasoning")))
                ),
            }
        )

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body, mock = await self._accept(request)
        words = _words(body)
        if body.get("stream"):
            return await self._stream(request, body, mock, words, chat=False)
        reply = _reply(mock)
        return _json(
            {
                "id": "cmpl-mock",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "text": reply, "finish_reason": "stop", "logprobs": None}],
                "usage": self._served(mock, _usage(words, len(reply.split()))),
            }
        )

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        mock: dict[str, Any],
        words: int,
        *,
        chat: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        chunks = mock.get("chunks", 5)
        delay = mock.get("delay", 0)
        break_after = mock.get("break_after")
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        tag = body.get("mock", {}).get("tag")
        base = {
            "id": "chatcmpl-mock" if chat else "cmpl-mock",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": body["model"],
        }
        sent = 0
        self._count(mock, "prompt_tokens", words)
        try:
            for piece in _pieces(mock, chunks, chat):
                if break_after is not None and sent >= break_after:
                    self.events.append({"tag": tag, "event": "broken", "chunks": sent})
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if delay:
                    await asyncio.sleep(delay)
                await response.write(
                    b"data: " + orjson.dumps({**base, "choices": [piece]}) + b"\n\n"
                )
                sent += 1
                if piece.get("text") or (piece.get("delta") or {}).get("content"):
                    self._count(mock, "completion_tokens", 1)
            if include_usage and mock.get("usage", True):
                usage = _usage(words, chunks, reasoning=bool(mock.get("reasoning")))
                await response.write(
                    b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
                )
            if mock.get("done", True):
                await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            self.events.append({"tag": tag, "event": "finished", "chunks": sent})
        except (asyncio.CancelledError, ConnectionResetError):
            self.events.append(
                {"tag": tag, "event": "cancelled", "chunks": sent, "at": time.time()}
            )
            raise
        return response

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body, _mock = await self._accept(request)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for index, text in enumerate(inputs):
            vector = _vector(str(text))
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{DIM}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(str(text).split()) for text in inputs)
        self._count(_mock, "prompt_tokens", tokens)
        return _json(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def rerank(self, request: web.Request) -> web.StreamResponse:
        body, _mock = await self._accept(request)
        query = set(body["query"].lower().split())
        results = []
        for index, document in enumerate(body["documents"]):
            text = document if isinstance(document, str) else str(document.get("text", ""))
            overlap = len(query & set(text.lower().split()))
            row: dict[str, Any] = {"index": index, "relevance_score": overlap / (len(query) or 1)}
            if body.get("return_documents"):
                row["document"] = {"text": text}
            results.append(row)
        results.sort(key=lambda row: -row["relevance_score"])
        top_n = body.get("top_n") or len(results)
        tokens = len(body["query"].split()) + sum(len(str(d).split()) for d in body["documents"])
        return _json(
            {
                "id": "rerank-mock",
                "model": body["model"],
                "results": results[:top_n],
                "usage": {"total_tokens": tokens},
            }
        )

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """Anthropic Messages, natively: the reply names itself so a test can tell it apart
        from a translated one."""
        body = await self._record(request)
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            raise _Failure(401, "invalid x-api-key", "authentication_error")
        text = "native anthropic reply"
        usage = {"input_tokens": 11, "output_tokens": 3}
        message = {
            "id": "msg_mock",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return _json(message)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": 11, "output_tokens": 0},
        }
        events = [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 3},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        for name, data in events:
            await response.write(f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n")
        await response.write_eof()
        return response

    async def responses(self, request: web.Request) -> web.StreamResponse:
        """The Responses API, natively: the reply names itself so a test can tell it apart
        from a translated one."""
        body, _mock = await self._accept(request)
        text = "native responses reply"
        usage = {
            "input_tokens": 13,
            "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 16,
        }
        response_id = "resp_mock" + hashlib.sha256(orjson.dumps(body)).hexdigest()[:24]
        item = {
            "id": "msg_mock",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        done = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": body["model"],
            "output": [item],
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
        }
        if not body.get("stream"):
            return _json(done)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        started = {**done, "status": "in_progress", "output": [], "usage": None}
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": "msg_mock", "output_index": 0, "content_index": 0}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": started},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "status": "in_progress", "content": []},
            },
            {"type": "response.content_part.added", **where, "part": part},
            {"type": "response.output_text.delta", **where, "delta": text, "logprobs": []},
            {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **where, "part": {**part, "text": text}},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": done},
        ]
        for number, event in enumerate(events):
            data = orjson.dumps({**event, "sequence_number": number})
            await response.write(f"event: {event['type']}\ndata: ".encode() + data + b"\n\n")
        await response.write_eof()
        return response

    async def delete_response(self, request: web.Request) -> web.StreamResponse:
        response_id = request.match_info["response_id"]
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append({"path": request.path, "headers": headers, "body": {}})
        return _json({"id": response_id, "object": "response", "deleted": True})

    async def _accept_form(self, request: web.Request) -> dict[str, Any]:
        """Read a multipart upload part by part (files hashed as they arrive, never held) and
        keep it for /_mock/requests: its fields, its files' names, sizes and digests, and
        whether it came chunked."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        fields: dict[str, Any] = {}
        files: list[dict[str, Any]] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            if part.filename is None:
                fields[part.name or ""] = await part.text()
                continue
            digest, size = hashlib.sha256(), 0
            while chunk := await part.read_chunk(64 * 1024):
                digest.update(chunk)
                size += len(chunk)
                self.receiving[part.filename] = size
            files.append(
                {
                    "field": part.name,
                    "filename": part.filename,
                    "content_type": part.headers.get("content-type"),
                    "bytes": size,
                    "sha256": digest.hexdigest(),
                }
            )
        body = {**fields, "files": files}
        self.requests.append({"path": request.path, "headers": headers, "body": body})
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            raise _Failure(401, "Incorrect API key provided.", "invalid_api_key")
        if self.fail_status:
            raise _Failure(self.fail_status, f"mock failure {self.fail_status}", "mock_failure")
        self.stats["requests"] += 1
        return body

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        """Whisper's answers in each response_format, with gpt-4o-transcribe's token usage;
        ``stream=true`` answers with its transcript events."""
        body = await self._accept_form(request)
        size = sum(file["bytes"] for file in body["files"])
        text = f"mock transcript of {size} bytes"
        usage = {"type": "tokens", "input_tokens": 7, "output_tokens": 5, "total_tokens": 12}
        if body.get("stream") == "true":
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            for word in text.split():
                event = {"type": "transcript.text.delta", "delta": word + " "}
                await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
            done = {"type": "transcript.text.done", "text": text, "usage": usage}
            await response.write(b"data: " + orjson.dumps(done) + b"\n\n")
            await response.write_eof()
            return response
        form = body.get("response_format", "json")
        if form == "text":
            return web.Response(text=text, content_type="text/plain")
        if form in ("srt", "vtt"):
            cue = "00:00:00,000 --> 00:00:01,000" if form == "srt" else "00:00.000 --> 00:01.000"
            head = "1\n" if form == "srt" else "WEBVTT\n\n"
            return web.Response(text=f"{head}{cue}\n{text}\n", content_type="text/plain")
        if form == "verbose_json":
            segment = {"id": 0, "start": 0.0, "end": 1.0, "text": text}
            return _json(
                {
                    "task": "transcribe",
                    "language": body.get("language", "english"),
                    "duration": 1.0,
                    "text": text,
                    "segments": [segment],
                    "usage": {"type": "duration", "seconds": 1},
                }
            )
        return _json({"text": text, "usage": usage})

    async def translations(self, request: web.Request) -> web.StreamResponse:
        body = await self._accept_form(request)
        size = sum(file["bytes"] for file in body["files"])
        return _json({"text": f"mock translation of {size} bytes"})

    async def speech(self, request: web.Request) -> web.StreamResponse:
        """Speech as audio bytes, sent in pieces as a TTS model streams them."""
        body, mock = await self._accept(request)
        kinds = {"mp3": "audio/mpeg", "wav": "audio/wav", "opus": "audio/ogg", "pcm": "audio/pcm"}
        kind = kinds.get(body.get("response_format", "mp3"), "application/octet-stream")
        response = web.StreamResponse(headers={"content-type": kind})
        await response.prepare(request)
        for piece in speech_audio(body["input"], mock.get("chunks", 8)):
            await response.write(piece)
        await response.write_eof()
        return response

    async def image_generations(self, request: web.Request) -> web.StreamResponse:
        body, _mock = await self._accept(request)
        return _json(_images(body))

    async def image_edits(self, request: web.Request) -> web.StreamResponse:
        body = await self._accept_form(request)
        return _json(_images(body))

    async def models(self, request: web.Request) -> web.StreamResponse:
        if self.api_key is not None and request.headers.get("authorization") != (
            f"Bearer {self.api_key}"
        ):
            raise _Failure(401, "Incorrect API key provided.", "invalid_api_key")
        names = ("chat-upstream", "embed-upstream", "deepseek-reasoner")
        return _json(
            {
                "object": "list",
                "data": [{"id": name, "object": "model", "owned_by": "mock"} for name in names],
            }
        )

    async def recorded(self, _request: web.Request) -> web.StreamResponse:
        return _json(list(self.requests))

    async def recorded_events(self, _request: web.Request) -> web.StreamResponse:
        return _json(list(self.events))

    async def served(self, _request: web.Request) -> web.StreamResponse:
        return _json(self.stats)

    async def served_by_tag(self, _request: web.Request) -> web.StreamResponse:
        return _json(self.tagged)

    async def reset(self, _request: web.Request) -> web.StreamResponse:
        self.requests.clear()
        self.events.clear()
        self.stats = dict.fromkeys(self.stats, 0)
        self.tagged.clear()
        return _json({"ok": True})


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class _Failure(web.HTTPException):
    """An error answer with any status and OpenAI's error body."""

    def __init__(self, status: int, message: str, code: str) -> None:
        self.status_code = status
        body = {"error": {"message": message, "type": "mock_error", "param": None, "code": code}}
        super().__init__(text=orjson.dumps(body).decode(), content_type="application/json")


def _words(body: dict[str, Any]) -> int:
    text = orjson.dumps(body.get("messages") or body.get("prompt") or "").decode()
    return max(1, len(text.split()))


#: A 1x1 PNG, what every mock image is.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def speech_audio(text: str, pieces: int) -> list[bytes]:
    """The mock's "audio" for a text: pieces of 4 KiB derived from it, the same every time."""
    seed = hashlib.sha256(text.encode()).digest()
    return [(seed * 128)[: 4096 - index] + bytes([index]) * index for index in range(pieces)]


def _images(body: dict[str, Any]) -> dict[str, Any]:
    """gpt-image-1's answer: n images (base64, or URLs for response_format=url), and usage."""
    n = int(body.get("n") or 1)
    if body.get("response_format") == "url":
        data = [{"url": f"https://images.invalid/mock-{i}.png"} for i in range(n)]
    else:
        data = [{"b64_json": base64.b64encode(PNG).decode()} for _ in range(n)]
    prompt = len(str(body.get("prompt", "")).split())
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"text_tokens": prompt, "image_tokens": 0},
        "output_tokens": 272 * n,
        "total_tokens": prompt + 272 * n,
    }
    return {"created": int(time.time()), "data": data, "usage": usage}


def _has_tool_result(body: dict[str, Any]) -> bool:
    return any(isinstance(m, dict) and m.get("role") == "tool" for m in body.get("messages") or ())


def _reply(mock: dict[str, Any]) -> str:
    if isinstance(mock.get("reply"), str):
        return str(mock["reply"])
    return " ".join(f"word{i}" for i in range(mock.get("chunks", 5)))


def _usage(prompt: int, completion: int, *, reasoning: bool = False) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": prompt // 2},
    }
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": 3}
    return usage


def _tool_call() -> dict[str, Any]:
    return {
        "id": "call_mock",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Beijing"}'},
    }


def _pieces(mock: dict[str, Any], chunks: int, chat: bool) -> list[dict[str, Any]]:
    if not chat:
        return [
            {"index": 0, "text": f"word{i} ", "finish_reason": None, "logprobs": None}
            for i in range(chunks)
        ]
    pieces: list[dict[str, Any]] = [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    if mock.get("reasoning"):
        pieces += [
            {"index": 0, "delta": {"reasoning_content": word}, "finish_reason": None}
            for word in ("thinking ", "it ", "over")
        ]
    if mock.get("tool_call"):
        call = {**_tool_call(), "index": 0}
        pieces.append({"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None})
    words = (
        [word + " " for word in mock["reply"].split(" ")]
        if isinstance(mock.get("reply"), str)
        else [f"word{i} " for i in range(chunks)]
    )
    pieces += [{"index": 0, "delta": {"content": word}, "finish_reason": None} for word in words]
    pieces.append({"index": 0, "delta": {}, "finish_reason": "stop"})
    return pieces


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [(byte - 128) / 128 for byte in digest[:DIM]]


async def run(host: str, port: int, upstream: MockUpstream) -> None:
    runner = web.AppRunner(upstream.app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=4096).start()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--api-key", default=None, help="Require this key.")
    parser.add_argument("--fail-status", type=int, default=None, help="Fail every call so.")
    args = parser.parse_args()
    upstream = MockUpstream(api_key=args.api_key, fail_status=args.fail_status)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.host, args.port, upstream))


if __name__ == "__main__":
    main()
