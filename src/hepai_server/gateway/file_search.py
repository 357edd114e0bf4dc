"""file_search on the chat route, for models that do not search files themselves.

A chat request naming ``{"type": "file_search", "vector_store_ids": [...]}`` among its tools
is answered with sources: the platform searches those stores as the caller (who must be able
to read each, or gets 404), puts the passages into the prompt as a system message with a
marker for each (``[1]``, ``[2]``…), takes the tool out of the request (the model is never
asked to call it), and relays the call as usual. The answer comes back with an
``annotations`` entry for every marker the model used, in the Assistants API's shape:

    {"type": "file_citation", "text": "[1]", "start_index": 41, "end_index": 44,
     "file_citation": {"file_id", "filename", "vector_store_id", "page", "heading", "quote"}}

On a stream the annotations arrive in one more chunk just before ``[DONE]``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from hepai_server.db.tables import utcnow
from hepai_server.errors import InvalidRequest
from hepai_server.gateway.asgi import Message, Send
from hepai_server.gateway.runtime import Gateway
from hepai_server.knowledge import stores
from hepai_server.knowledge.filters import check_filter
from hepai_server.knowledge.service import MAX_RESULTS, Search
from hepai_server.protocol.sse import DONE, event_data, split_events
from hepai_server.protocol.vector_stores import SearchHit
from hepai_server.services.accounts import Caller

DEFAULT_RESULTS = 5
#: What each passage adds to the prompt beside its text (its marker, file, page, heading),
#: in tokens, for admission.
PASSAGE_OVERHEAD = 32
MARKER = re.compile(r"\[(\d{1,2})\]")
INSTRUCTIONS = (
    "Answer using the sources below when they are relevant. Cite each source you use with "
    "its marker, such as [1], right after the statement it supports. If the sources do not "
    "hold the answer, say so."
)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        ).strip()
    return ""


def _is_file_search(tool: Any) -> bool:
    return isinstance(tool, dict) and tool.get("type") == "file_search"


def find_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The request's file_search tool, checked and left where it is; None if it has none."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return None
    tool = next(filter(_is_file_search, tools), None)
    return check_tool(tool) if tool is not None else None


async def passage_tokens(gateway: Gateway, caller: Caller, tool: dict[str, Any]) -> int:
    """What the sources a file_search puts into the prompt may add to it, reserved when the
    call is admitted (the search itself runs only after): the instructions, and as many
    passages as it asks for, each as long as the longest chunk its stores (the ones the
    caller may read: the search refuses the others) are cut to. Not
    counted, a burst of searching calls would be admitted against a budget or a TPM limit
    on prompts a fraction of what they become."""
    limit = tool.get("max_num_results", DEFAULT_RESULTS)
    limit = limit if type(limit) is int and 1 <= limit <= MAX_RESULTS else DEFAULT_RESULTS
    store_ids = list(dict.fromkeys(tool["vector_store_ids"]))
    longest = await gateway.transact(
        lambda session: stores.longest_chunk(session, caller, store_ids)
    )
    return len(INSTRUCTIONS) // 4 + limit * (longest + PASSAGE_OVERHEAD)


def take_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The request's file_search tool (``find_tool``), every file_search tool taken out of
    its tools; None if it has none."""
    tool = find_tool(body)
    if tool is None:
        return None
    rest = [t for t in body["tools"] if not _is_file_search(t)]
    if rest:
        body["tools"] = rest
    else:
        body.pop("tools", None)
        body.pop("tool_choice", None)
        body.pop("parallel_tool_calls", None)
    return tool


def check_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """``tool`` if it names the stores to search (the rest is checked by the search)."""
    stores = tool.get("vector_store_ids")
    if not isinstance(stores, list) or not stores or not all(isinstance(s, str) for s in stores):
        raise InvalidRequest("file_search needs 'vector_store_ids'", param="tools")
    options = tool.get("ranking_options")
    threshold = options.get("score_threshold", 0.0) if isinstance(options, dict) else 0.0
    if threshold is not None and (
        type(threshold) not in (int, float) or not 0.0 <= threshold <= 1.0
    ):
        raise InvalidRequest(
            "file_search's 'score_threshold' must be a number from 0 to 1", param="tools"
        )
    return tool


async def ground(
    gateway: Gateway, caller: Caller, body: dict[str, Any], request_id: str
) -> Sources | None:
    """Search the stores the request's file_search names and put what was found into its
    prompt; the sources, to annotate the answer with (None: no file_search asked for)."""
    tool = take_tool(body)
    if tool is None:
        return None
    return await ground_messages(gateway, caller, tool, body["messages"], request_id)


async def ground_messages(
    gateway: Gateway,
    caller: Caller,
    tool: dict[str, Any],
    messages: list[dict[str, Any]],
    request_id: str,
    *,
    param: str = "messages",
) -> Sources:
    """Search as ``tool`` (a checked file_search tool) says for the last user message of the
    chat ``messages``, and put what was found into them, after their system messages;
    ``param`` names where the client sent the messages, for an error."""
    query = next(
        (_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    if not query:
        raise InvalidRequest("file_search needs a user message to search for", param=param)
    limit = tool.get("max_num_results", DEFAULT_RESULTS)
    options = tool.get("ranking_options")
    options = options if isinstance(options, dict) else {}
    filters = tool.get("filters")
    hits = await gateway.knowledge.search(
        caller,
        Search(
            store_ids=list(dict.fromkeys(tool["vector_store_ids"])),
            query=query,
            max_num_results=limit if type(limit) is int else DEFAULT_RESULTS,
            filters=check_filter(filters) if filters is not None else None,
            score_threshold=float(options.get("score_threshold") or 0.0),
            rerank=options.get("ranker") != "none",
        ),
        request_id=request_id,
        now=utcnow(),
    )
    sources = Sources(hits, query)
    position = sum(1 for m in messages if m.get("role") in ("system", "developer"))
    messages.insert(position, {"role": "system", "content": sources.prompt()})
    return sources


@dataclass(slots=True)
class Sources:
    """The passages given to the model, and the annotation of its answer with them."""

    hits: list[SearchHit]
    #: What was searched for.
    query: str = ""
    #: The answer's text so far, per choice (streams).
    texts: dict[int, str] = field(default_factory=dict)

    def prompt(self) -> str:
        if not self.hits:
            return INSTRUCTIONS + "\n\nNo sources were found for this question."
        parts = [INSTRUCTIONS]
        for number, hit in enumerate(self.hits, 1):
            where = ", ".join(
                part
                for part in (hit.filename, f"page {hit.page}" if hit.page else "", hit.heading)
                if part
            )
            parts.append(f"[{number}] ({where})\n{hit.text}")
        return "\n\n".join(parts)

    def cited(self, text: str) -> Iterator[tuple[re.Match[str], SearchHit]]:
        """Each marker of a source in ``text``, with the source it names."""
        for match in MARKER.finditer(text):
            number = int(match.group(1))
            if 1 <= number <= len(self.hits):
                yield match, self.hits[number - 1]

    def annotations(self, text: str) -> list[dict[str, Any]]:
        return [
            {
                "type": "file_citation",
                "text": match.group(0),
                "start_index": match.start(),
                "end_index": match.end(),
                "file_citation": {
                    "file_id": hit.file_id,
                    "filename": hit.filename,
                    "vector_store_id": hit.store_id,
                    "page": hit.page,
                    "heading": hit.heading,
                    "quote": hit.text[:500],
                },
            }
            for match, hit in self.cited(text)
        ]

    def annotate(self, raw: bytes) -> bytes:
        """A whole chat completion with its choices' annotations."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
        for choice in body.get("choices") or () if isinstance(body, dict) else ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                message["annotations"] = [
                    *(message.get("annotations") or []),
                    *self.annotations(message["content"]),
                ]
        return orjson.dumps(body)

    def closing_chunk(self, last: dict[str, Any]) -> bytes:
        """The chunk of annotations a stream ends with, shaped like ``last``, its chunk before."""
        choices = [
            {
                "index": index,
                "delta": {"annotations": self.annotations(text)},
                "finish_reason": None,
            }
            for index, text in sorted(self.texts.items())
        ]
        chunk = {
            **{k: last.get(k) for k in ("id", "object", "created", "model")},
            "choices": choices,
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def wrap(self, send: Send, *, stream: bool) -> Send:
        """``send`` that annotates the answer on its way to the client."""
        held: list[Message] = []
        last: dict[str, Any] = {}

        async def whole(message: Message) -> None:
            if message["type"] == "http.response.start" or message.get("more_body"):
                held.append(message)
                return
            start, *parts = held
            raw = b"".join(part.get("body", b"") for part in parts) + message.get("body", b"")
            if start.get("status") == 200:
                raw = self.annotate(raw)
            headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            headers.append((b"content-length", str(len(raw)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": raw, "more_body": False})

        async def streaming(message: Message) -> None:
            body = message.get("body", b"") if message["type"] == "http.response.body" else b""
            if not body:
                await send(message)
                return
            for event in split_events(body):
                data = event_data(event)
                if not data or data == b"[DONE]":
                    continue
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(chunk, dict):
                    last.update(chunk)
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        content = delta.get("content")
                        if isinstance(content, str):
                            index = choice.get("index", 0)
                            self.texts[index] = self.texts.get(index, "") + content
            if body.endswith(DONE):
                body = body[: -len(DONE)] + self.closing_chunk(last) + DONE
            await send({**message, "body": body})

        return streaming if stream else whole
