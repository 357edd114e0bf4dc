"""The tools a caller may use over MCP, and calling them as the platform's other clients do.

Three kinds, each listed only to whom may call it:

- **worker functions**: every remote method of every live worker model the caller may call
  (the built-in document tools among them), named ``model__function``, described and typed from
  the worker's own ``get_register_functions``, and called through the dispatcher exactly as the
  hepai client's unified-gate calls are (its permissions, its file grants, its usage header);
- **chat**: one tool that asks a language model, offered when the operator chose models for it
  (``HEPAI_SERVER_MCP_CHAT_MODELS``) and the caller may call one of them;
- **external tools**: the tools of the MCP servers admins registered for the caller's groups,
  named ``server__tool``, called through the egress guard (gateway/mcp_client.py).

A call runs in the MCP request's frame: admitted against the caller's budgets and limits
(``Exchange.admit``) and recorded in one usage row, like a call of the same tool any other way.
File arguments may be platform file ids or URLs of the platform's file service
(``…/files/file-…/content``); the latter are passed on as the ids, so the worker reads the file
as the caller with the call's grant.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from hepai_server.errors import HepAIError, InvalidRequest, UpstreamError
from hepai_server.gateway import registry
from hepai_server.gateway.asgi import Collected
from hepai_server.gateway.frame import Exchange
from hepai_server.gateway.mcp_client import McpClient
from hepai_server.gateway.proxy import Call
from hepai_server.gateway.registry import WorkerRoute
from hepai_server.gateway.relay import resolve_model
from hepai_server.gateway.routing import best
from hepai_server.gateway.runtime import Gateway
from hepai_server.protocol.mcp import PLAIN_NAME, call_result, input_schema, tool_name
from hepai_server.protocol.openai import CHAT, Usage
from hepai_server.protocol.sse import event_data, split_events
from hepai_server.security.egress import parse_address
from hepai_server.services import mcp_servers
from hepai_server.services.accounts import Caller
from hepai_server.services.mcp_servers import McpSource

log = logging.getLogger(__name__)

WORKER, CHAT_TOOL, EXTERNAL = "worker", "chat", "external"
#: Methods that serve the OpenAI and Anthropic routes: a worker's model, not its tools.
MODEL_FUNCTIONS = frozenset(
    {
        "chat_completions",
        "completions",
        "embeddings",
        "rerank",
        "responses",
        "responses_compact",
        "anthropic_messages",
        "anthropic_count_tokens",
        "audio_speech",
        "audio_transcriptions",
        "audio_translations",
        "image_generations",
        "image_edits",
    }
)
#: Methods every worker answers (wire spec §2.1): not tools.
BUILTINS = frozenset({"__call__", "get_register_functions", "hello_world"})
#: How long a worker or an external server may take to say what tools it has.
LISTING_SECONDS = 10.0
#: How deep tool arguments may nest (JSON allows far more than the encoder takes back).
MAX_DEPTH = 64
FILE_URL = re.compile(
    r"^https?://[^/?#\s]+(?:/[^?#\s]*)?/files/(file-[0-9a-f]{32})(?:/content|/preview)?/?(?:\?\S*)?$"
)
ANY_ARGUMENTS: dict[str, Any] = {"type": "object", "additionalProperties": True}


@dataclass(frozen=True, slots=True)
class Tool:
    """One tool as MCP lists it, and what calling it reaches."""

    name: str
    description: str
    input_schema: dict[str, Any]
    kind: str
    #: The worker model, or the external server's name ("" for chat).
    target: str = ""
    #: The worker's method, or the server's own name of the tool.
    function: str = ""
    source: McpSource | None = None

    def listing(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
        }


async def tools_for(gateway: Gateway, caller: Caller, request_id: str) -> list[Tool]:
    """Every tool the caller may call, each name once."""
    workers, external = await asyncio.gather(
        worker_tools(gateway, caller, request_id), external_tools(gateway, caller)
    )
    chat = chat_tool(gateway, caller)
    # Names are unique within each kind (protocol/mcp.py); across kinds, what the operator and
    # the admins provide comes first, so no worker owner can take the name of their tools.
    tools, seen = [], set()
    for tool in [*([chat] if chat else []), *external, *workers]:
        if tool.name in seen:
            log.warning(
                "MCP tool %s of %s is hidden by another of that name", tool.name, tool.target
            )
            continue
        seen.add(tool.name)
        tools.append(tool)
    return tools


# --- listing ---------------------------------------------------------------------------------


async def worker_tools(gateway: Gateway, caller: Caller, request_id: str) -> list[Tool]:
    expiry = gateway.settings.worker_expiry_seconds
    models = await gateway.transact(
        lambda s: registry.callable_models(s, caller=caller, now=time.time(), expiry=expiry)
    )
    found = await asyncio.gather(
        *(
            functions_of(gateway, caller, name, routes, request_id)
            for name, routes in models.items()
        )
    )
    tools = []
    for (model, routes), rows in zip(models.items(), found, strict=True):
        # Only what the worker registered: its description may not add names of its own.
        registered = {f for route in routes for f in route.functions}
        for row in rows:
            function = row.get("__name__")
            if not isinstance(function, str) or function in MODEL_FUNCTIONS:
                continue
            if registered and function not in registered:
                continue
            doc = row.get("__doc__")
            described = doc.strip() if isinstance(doc, str) and doc.strip() else function
            tools.append(
                Tool(
                    tool_name(model, function),
                    f"{described}\n\n({function} of {model} on the HepAI platform; file "
                    "arguments take platform file ids or file URLs)",
                    input_schema(row["__signature__"]) if "__signature__" in row else ANY_ARGUMENTS,
                    WORKER,
                    model,
                    function,
                )
            )
    return tools


async def functions_of(
    gateway: Gateway, caller: Caller, model: str, routes: list[WorkerRoute], request_id: str
) -> list[dict[str, Any]]:
    """A worker model's methods as its ``get_register_functions`` describes them (cached); the
    registered method names alone when it cannot say."""
    cache = gateway.tools
    for route in routes:
        if (known := cache.get((WORKER, route.worker_id, model))) is not None:
            return list(known)
    route = best(routes, gateway.dispatcher.load)
    rows: list[dict[str, Any]] | None = None
    try:
        answer = await asyncio.wait_for(
            call_worker(gateway, caller, [route], model, "get_register_functions", {}, request_id),
            LISTING_SECONDS,
        )
        if answer[0] == 200 and isinstance(answer[1], list):
            rows = [row for row in answer[1] if isinstance(row, dict)]
    except (HepAIError, TimeoutError, aiohttp.ClientError) as exc:
        log.info("%s did not describe its functions: %s", model, exc)
    if rows is None:
        rows = [{"__name__": f} for f in route.functions if f not in BUILTINS]
    cache.put((WORKER, route.worker_id, model), rows)
    return rows


def chat_tool(gateway: Gateway, caller: Caller) -> Tool | None:
    models = [
        model.id
        for name in gateway.settings.mcp_chat_models
        if (model := gateway.catalog.resolve_or_none(name, caller)) and model.type == "chat"
    ]
    if not models:
        return None
    schema = {
        "type": "object",
        "properties": {
            "model": {"type": "string", "enum": models, "description": "The model to ask."},
            "prompt": {"type": "string", "description": "What to ask it."},
            "system": {"type": "string", "description": "Instructions for the model."},
            "max_tokens": {"type": "integer", "minimum": 1},
        },
        "required": ["model", "prompt"],
    }
    return Tool("chat", "Ask one of the platform's language models; its answer.", schema, CHAT_TOOL)


async def external_tools(gateway: Gateway, caller: Caller) -> list[Tool]:
    """The tools of the servers registered for the caller's groups (none for a key limited
    to certain models: those name models, not servers)."""
    if caller.allowed_models is not None:
        return []
    sources = await gateway.transact(
        lambda s: mcp_servers.sources_for(s, caller=caller, sealer=gateway.sealer)
    )
    listed = await asyncio.gather(*(remote_tools(gateway, source) for source in sources))
    tools = []
    for source, rows in zip(sources, listed, strict=True):
        for row in rows:
            name = row.get("name")
            if not isinstance(name, str) or not name:
                continue
            schema = row.get("inputSchema")
            tools.append(
                Tool(
                    tool_name(source.name, name, PLAIN_NAME),
                    str(row.get("description") or name),
                    schema if isinstance(schema, dict) else ANY_ARGUMENTS,
                    EXTERNAL,
                    source.name,
                    name,
                    source,
                )
            )
    return tools


async def remote_tools(gateway: Gateway, source: McpSource) -> list[dict[str, Any]]:
    key = (EXTERNAL, source.name, source.url)
    if (known := gateway.tools.get(key)) is not None:
        return list(known)
    try:
        rows = await asyncio.wait_for(client_of(gateway, source).list_tools(), LISTING_SECONDS)
    except (HepAIError, TimeoutError, aiohttp.ClientError) as exc:
        log.warning("MCP server %s did not list its tools: %s", source.name, exc)
        rows = []
    gateway.tools.put(key, rows)
    return rows


def client_of(gateway: Gateway, source: McpSource) -> McpClient:
    """A client of an admin's server: through the trusted owners' pool, whose every
    connection the egress guard checks (never link-local, multicast and the like)."""
    session = gateway.dispatcher.sessions.for_owner(trusted=True)
    return McpClient(session, parse_address(source.url), source.headers, name=source.name)


# --- calling ---------------------------------------------------------------------------------


async def call_tool(
    exchange: Exchange, caller: Caller, tool: Tool, arguments: dict[str, Any]
) -> dict[str, Any]:
    """Call a tool the caller may use, in the exchange's frame; its MCP result. What the
    platform refuses (a limit, a worker gone) is an error result, as a tool's failure is."""
    try:
        if tool.kind == WORKER:
            return await worker_call(exchange, caller, tool, arguments)
        if tool.kind == CHAT_TOOL:
            return await chat_call(exchange, caller, arguments)
        return await external_call(exchange, caller, tool, arguments)
    except HepAIError as error:
        exchange.outcome.fail(error.status, error.message)
        return call_result(
            f"{error.message} ({error.status} {error.code or error.type})", is_error=True
        )


async def worker_call(
    exchange: Exchange, caller: Caller, tool: Tool, arguments: dict[str, Any]
) -> dict[str, Any]:
    gateway = exchange.gateway
    exchange.endpoint, exchange.model = f"worker.{tool.function}"[:32], tool.target
    routes = await gateway.dispatcher.routes(caller, tool.target)
    pages = gateway.settings.tool_pages_estimate
    await exchange.admit(caller, prompt=0, output=0, embedding=False, pages=pages)
    status, value, usage, worker = await call_worker(
        gateway,
        caller,
        routes,
        tool.target,
        tool.function,
        file_ids(arguments),
        exchange.request_id,
    )
    outcome = exchange.outcome
    outcome.served_by, outcome.status, outcome.usage = worker, status, usage
    if status >= 400:
        message = failure_message(value)
        outcome.error = message
        return call_result(
            f"{tool.target}.{tool.function} failed ({status}): {message}", is_error=True
        )
    return call_result(value)


async def call_worker(
    gateway: Gateway,
    caller: Caller,
    routes: list[WorkerRoute],
    model: str,
    function: str,
    kwargs: dict[str, Any],
    request_id: str,
) -> tuple[int, Any, Usage, str]:
    """One call through the dispatcher, as the unified gate makes it: its status, its value
    (a streamed answer as the list of its events' values), its reported usage, and the
    worker that answered."""
    body = io.BytesIO(orjson.dumps({"kwargs": kwargs}))
    body.seek(0, io.SEEK_END)  # the dispatcher reads the size from the position
    answer = await gateway.dispatcher.call(
        caller, routes, model=model, function=function, body=body, request_id=request_id
    )
    response = answer.response
    try:
        limit = gateway.settings.max_body_bytes
        raw = await response.content.read(limit + 1)
        if len(raw) > limit:
            raise UpstreamError(f"{model}.{function} answered more than {limit} bytes")
        usage = Usage.from_tool_header(response.headers.get("x-hepai-usage"))
        if response.headers.get("content-type", "").startswith("application/json"):
            value = loads(raw)
        else:
            value = [loads(event_data(event) or b"") for event in split_events(raw)]
        return response.status, value, usage, answer.worker_id
    finally:
        response.release()


async def chat_call(
    exchange: Exchange, caller: Caller, arguments: dict[str, Any]
) -> dict[str, Any]:
    gateway = exchange.gateway
    model_id, prompt = arguments.get("model"), arguments.get("prompt")
    exchange.endpoint, exchange.model = CHAT.name, str(model_id)[:256]
    allowed = chat_tool(gateway, caller)
    choices = allowed.input_schema["properties"]["model"]["enum"] if allowed else []
    if model_id not in choices:
        raise InvalidRequest(f"'model' must be one of {', '.join(choices)}", param="model")
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequest("'prompt' is required", param="prompt")
    model = await resolve_model(gateway, caller, str(model_id), CHAT, exchange.request_id)
    messages = [{"role": "user", "content": prompt}]
    if isinstance(system := arguments.get("system"), str) and system:
        messages.insert(0, {"role": "system", "content": system})
    body: dict[str, Any] = {"model": model_id, "messages": messages}
    if type(limit := arguments.get("max_tokens")) is int and limit > 0:
        body["max_tokens"] = limit
    call = Call.create(
        request_id=exchange.request_id,
        caller=caller,
        endpoint=CHAT,
        model=model,
        body=body,
        started=exchange.started,
    )
    output = limit if type(limit) is int else gateway.settings.default_output_tokens
    await exchange.admit(caller, prompt=len(prompt) // 4 + 1, output=output, embedding=False)
    answer = Collected()
    await gateway.proxy.relay(call, exchange.outcome, answer.receive, answer.send)
    value = loads(answer.body)
    if answer.status >= 400 or not isinstance(value, dict):
        return call_result(
            f"{model_id} failed ({answer.status}): {failure_message(value)}", is_error=True
        )
    message = ((value.get("choices") or [{}])[0]).get("message") or {}
    return call_result(str(message.get("content") or ""))


async def external_call(
    exchange: Exchange, caller: Caller, tool: Tool, arguments: dict[str, Any]
) -> dict[str, Any]:
    assert tool.source is not None
    exchange.endpoint = "mcp.call"
    exchange.model = f"mcp:{tool.target}/{tool.function}"[:256]
    await exchange.admit(caller, prompt=0, output=0, embedding=False)
    exchange.outcome.served_by = f"mcp:{tool.target}"
    result = await client_of(exchange.gateway, tool.source).call_tool(tool.function, arguments)
    if exchange.outcome.first_byte_at is None:
        exchange.outcome.first_byte_at = time.perf_counter()
    return result


def file_ids(value: Any, depth: int = 0) -> Any:
    """Arguments with every URL of a platform file replaced by the file's id; 400 for
    arguments nested deeper than any tool takes."""
    if isinstance(value, str):
        match = FILE_URL.match(value)
        return match.group(1) if match else value
    if depth > MAX_DEPTH and isinstance(value, list | dict):
        raise InvalidRequest(f"tool arguments nest deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        return [file_ids(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {key: file_ids(item, depth + 1) for key, item in value.items()}
    return value


def failure_message(value: Any) -> str:
    """What a worker's (or the platform's) error body says."""
    if isinstance(value, dict):
        error = value.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        if value.get("detail"):
            return str(value["detail"])[:500]
    return str(value)[:500]


def loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
