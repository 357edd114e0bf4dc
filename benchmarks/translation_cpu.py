"""CPU per request of the translations alone: Anthropic Messages and the Responses API to and
from chat completions, whole and streamed, in this process, with no server around them.

    PYTHONPATH=src .venv/bin/python benchmarks/translation_cpu.py [--requests 20000]

Each request is what the gateway's handlers do beyond relaying chat: the client's request
checked and translated to a chat completion, then the upstream's answer (a whole chat completion
of ``--chunks`` words, or a stream of that many chunks with its usage and [DONE], as the mock
upstream sends them) translated back to the client's API. Measured with the process's CPU clock,
best of ``--rounds``; immune to other work on the machine, unlike wall time. Prints a markdown
table for benchmarks/RESULTS.md.

``--only anthropic`` measures the Anthropic translation alone, so that it can be run against an
older checkout's sources (PYTHONPATH=that/src) to see the translation as it was there.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from hepai_server.gateway.limiter import estimate_tokens
from hepai_server.gateway.proxy import translate_events
from hepai_server.protocol.anthropic import StreamTranslator, chat_to_message, messages_to_chat
from hepai_server.protocol.openai import CHAT, check_request

try:
    from hepai_server.protocol.response_stream import ResponseStream
    from hepai_server.protocol.responses import (
        ResponseShape,
        chat_to_response,
        input_items,
        responses_to_chat,
        split_tools,
    )
    from hepai_server.protocol.responses import check_request as check_responses
    from hepai_server.protocol.responses import estimate_tokens as estimate_responses
except ImportError:  # older sources, measured with --only anthropic
    pass

SYSTEM, QUESTION, MODEL = "You are a helpful assistant.", "Say hello in one short sentence.", "m"


def chat_answer(chunks: int) -> bytes:
    words = " ".join(f"word{i}" for i in range(chunks))
    return orjson.dumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": 1,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": words},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": chunks, "total_tokens": 40},
        }
    )


def chat_stream(chunks: int) -> bytes:
    base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    deltas = [{"role": "assistant", "content": ""}]
    deltas += [{"content": f"word{i} "} for i in range(chunks)]
    events = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        for delta in deltas
    ]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    usage = {"prompt_tokens": 20, "completion_tokens": chunks, "total_tokens": 20 + chunks}
    events.append({**base, "choices": [], "usage": usage})
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def anthropic(raw: bytes, answer: bytes, stream: bytes | None) -> bytes:
    """What gateway/relay.py does for a Messages request beyond what it does for chat."""
    body = orjson.loads(raw)
    chat = messages_to_chat(body)
    check_request(CHAT, chat)
    estimate_tokens(CHAT, len(raw), chat, 1024)
    if stream is None:
        return orjson.dumps(chat_to_message(orjson.loads(answer), MODEL))
    return translate_events(stream, StreamTranslator(MODEL))


def responses(raw: bytes, answer: bytes, stream: bytes | None) -> bytes:
    """What gateway/responses.py does for a Responses request beyond relaying chat."""
    body = orjson.loads(raw)
    check_responses(body)
    functions, _hosted = split_tools(body.get("tools"))
    items = input_items(body.get("input"))
    shape = ResponseShape.of(body, MODEL)
    responses_to_chat(body, items, tools=functions)
    estimate_responses(len(raw), [])
    if stream is None:
        return shape.encode(chat_to_response(orjson.loads(answer), shape))
    return translate_events(stream, ResponseStream(shape))


def cpu_per_request(
    work: Callable[[bytes, bytes, bytes | None], bytes],
    raw: bytes,
    answer: bytes,
    stream: bytes | None,
    *,
    requests: int,
    rounds: int,
) -> float:
    """Microseconds of CPU per request, best of ``rounds``."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time_ns()
        for _ in range(requests):
            work(raw, answer, stream)
        best = min(best, (time.process_time_ns() - started) / requests / 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--only", choices=("anthropic", "responses"), default=None)
    args = parser.parse_args()
    answer, stream = chat_answer(args.chunks), chat_stream(args.chunks)
    requests: dict[str, tuple[Callable[..., bytes], dict[str, Any]]] = {
        "anthropic": (
            anthropic,
            {
                "model": MODEL,
                "system": SYSTEM,
                "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": 64,
            },
        ),
        "responses": (
            responses,
            {"model": MODEL, "instructions": SYSTEM, "input": QUESTION, "max_output_tokens": 64},
        ),
    }
    print("| translation | whole: µs CPU/request | stream: µs CPU/request |")
    print("|---|---|---|")
    for name, (work, body) in requests.items():
        if args.only not in (None, name):
            continue
        raw = orjson.dumps(body)
        whole, streamed = (
            cpu_per_request(work, raw, answer, s, requests=args.requests, rounds=args.rounds)
            for s in (None, stream)
        )
        print(f"| {name} | {whole:.1f} | {streamed:.1f} |", flush=True)


if __name__ == "__main__":
    main()
