"""CPU per request of the translations alone: Anthropic Messages and the Responses API to and
from chat completions, whole and streamed, in this process, with no server around them.

    PYTHONPATH=src .venv/bin/python benchmarks/translation_cpu.py [--requests 20000]

Each request is what the gateway's handlers do beyond relaying chat: the client's request
checked and translated to a chat completion, then the upstream's answer (a whole chat completion
of ``--chunks`` words, or a stream of that many chunks with its usage and [DONE], as the mock
upstream sends them) translated back to the client's API. Measured with the process's CPU clock
in interleaved rounds (each round runs every translation once, so load from other work on a
shared machine falls on all of them alike); prints, per translation, the best round and the
range of all rounds, as a markdown table for benchmarks/RESULTS.md.

"responses" is a request with ``store: false`` as the handler answers it (the Response's JSON
alone); "responses, stored" is the default, ``store: true``, whose answer is also built as the
dict the conversation store keeps (writing it to the store is not measured here).

``--only anthropic`` measures the Anthropic translation alone, so that it can be run against an
older checkout's sources (PYTHONPATH=that/src) to see the translation as it was there.

``--instructions`` counts instead of timing: each translation runs ``--requests`` times in a
process of its own under valgrind (callgrind), which counts the instructions of those
requests alone. Other work on the machine cannot move a count, and runs repeat it to a
hundredth of a percent: a difference of a few hundred instructions is real. (Instructions are
not seconds, but the same work on the same data is the same instructions.) A thousand
requests are plenty; each runs some fifty times slower under valgrind.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from hepai_server.gateway.dialect import AnthropicDialect
from hepai_server.gateway.limiter import estimate_tokens
from hepai_server.gateway.proxy import translate_events
from hepai_server.protocol.anthropic import messages_to_chat
from hepai_server.protocol.openai import CHAT, check_request

try:
    from hepai_server.gateway.responses import ResponsesDialect
    from hepai_server.protocol.responses import (
        ResponseShape,
        input_items,
        responses_to_chat,
        split_tools,
    )
    from hepai_server.protocol.responses import check_request as check_responses
    from hepai_server.protocol.responses import estimate_tokens as estimate_responses
except ImportError:  # older sources, measured with --only anthropic
    pass

SYSTEM, QUESTION, MODEL = "You are a helpful assistant.", "Say hello in one short sentence.", "m"
#: Requests each ``--instructions`` run makes before its counted ones (caches, first calls).
WARMUP = 200


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
    dialect = AnthropicDialect(body)
    chat = messages_to_chat(body)
    check_request(CHAT, chat)
    estimate_tokens(CHAT, len(raw), chat, 1024)
    if stream is None:
        return dialect.answer(orjson.loads(answer), MODEL)
    return translate_events(stream, dialect.translator(MODEL))


def responses(raw: bytes, answer: bytes, stream: bytes | None) -> bytes:
    """What gateway/responses.py does for a Responses request beyond relaying chat."""
    body = orjson.loads(raw)
    _model, settings = check_responses(body)
    functions, _hosted = split_tools(body.get("tools"))
    items = input_items(body.get("input"))
    shape = ResponseShape.of(body, MODEL, settings)
    responses_to_chat(body, items, tools=functions)
    estimate_responses(len(raw), [])
    keep = _keep if body.get("store", True) else None
    dialect = ResponsesDialect(body=body, items=items, conversation=None, shape=shape, keep=keep)
    if stream is None:
        return dialect.answer(orjson.loads(answer), MODEL)
    translator = dialect.translator(MODEL)
    out = translate_events(stream, translator)
    dialect.ready  # the finished Response, built as the dict the store keeps  # noqa: B018
    return out


async def _keep(*_: Any) -> None:
    """A conversation store that keeps nothing (never called: only the dict is built)."""


def cpu_per_request(
    work: Callable[[bytes, bytes, bytes | None], bytes],
    raw: bytes,
    answer: bytes,
    stream: bytes | None,
    *,
    requests: int,
) -> float:
    """Microseconds of CPU per request, over one round of ``requests``."""
    started = time.process_time_ns()
    for _ in range(requests):
        work(raw, answer, stream)
    return (time.process_time_ns() - started) / requests / 1000


def cell(samples: list[float]) -> str:
    """The best round, and the range of all rounds."""
    return f"{min(samples):.1f} (rounds {min(samples):.1f} - {max(samples):.1f})"


def instructions(name: str, streamed: bool, calls: int, args: argparse.Namespace) -> float:
    """Instructions per request of one translation: this script run with ``--run`` under
    valgrind, counting only inside ``functools.reduce`` (``counted``), so neither the start-up
    nor the warm-up is in the count."""
    argv = [sys.executable, __file__, "--run", name, "--requests", str(calls)]
    argv += ["--chunks", str(args.chunks)] + (["--stream"] if streamed else [])
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--toggle-collect=functools_reduce",
            "--callgrind-out-file=/dev/null",
            *argv,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts every run
    )
    found = re.search(r"refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise SystemExit(f"valgrind counted nothing: {done.stderr[-500:]}")
    return int(found.group(1).replace(",", "")) / calls


def counted(work: Callable[[], bytes], calls: int) -> None:
    """``work`` ``calls`` times inside ``functools.reduce``: the one C function of the
    interpreter valgrind is told to count in (``--toggle-collect``)."""
    functools.reduce(lambda _, __: work(), range(calls), b"")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--only", choices=("anthropic", "responses"), default=None)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="Count instructions per request with valgrind instead of timing them",
    )
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    answer, stream = chat_answer(args.chunks), chat_stream(args.chunks)
    question = {"model": MODEL, "instructions": SYSTEM, "input": QUESTION, "max_output_tokens": 64}
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
        "responses": (responses, {**question, "store": False}),
        "responses, stored": (responses, question),
    }
    chosen = {
        name: (work, orjson.dumps(body))
        for name, (work, body) in requests.items()
        if args.only is None or name.startswith(args.only)
    }
    if args.run is not None:  # one translation, under valgrind (``instructions``)
        work, raw = chosen[args.run]
        upstream = stream if args.stream else None
        for _ in range(WARMUP):
            work(raw, answer, upstream)
        counted(lambda: work(raw, answer, upstream), args.requests)
        return
    if args.instructions:
        print("| translation | whole: instructions/request | stream: instructions/request |")
        print("|---|---|---|")
        for name in chosen:
            whole, streamed = (instructions(name, s, args.requests, args) for s in (False, True))
            print(f"| {name} | {whole:,.0f} | {streamed:,.0f} |")
        return
    samples: dict[tuple[str, bool], list[float]] = {}
    for _ in range(args.rounds):
        for name, (work, raw) in chosen.items():
            for streamed in (False, True):
                samples.setdefault((name, streamed), []).append(
                    cpu_per_request(
                        work, raw, answer, stream if streamed else None, requests=args.requests
                    )
                )
    print("| translation | whole: µs CPU/request, best (range) | stream: µs CPU/request |")
    print("|---|---|---|")
    for name in chosen:
        print(f"| {name} | {cell(samples[name, False])} | {cell(samples[name, True])} |")


if __name__ == "__main__":
    main()
