"""Gateway instructions per request of the translated APIs beside plain chat, counted by
valgrind: a measure of gateway CPU that other work on a shared machine does not move.

    .venv/bin/python benchmarks/translation_instructions.py [--requests 300] [--rounds 3]

benchmarks/translation.py reads the gateway's CPU time under load, which other work on the
machine moves by more than the few microseconds a translation costs. Here the gateway runs
under callgrind (instrumented once it is up, so its start-up is not counted), and each request
kind of translation.py is sent ``--requests`` times, one after another, after a warm-up. The
instructions the gateway executed meanwhile, divided by the requests, are that kind's cost:
in the event loop's thread (the request's own work; repeats within about 1 % between rounds)
and in all threads (with the ledger's and the conversation store's database writes, whose
batching follows the clock, so they move by more).

Instructions are not seconds (a cache miss costs many), but the same code on the same data
executes the same instructions: what this compares is the work each request kind does. The
mock upstream runs outside valgrind, on the other core. Prints a markdown table for
benchmarks/RESULTS.md; ``--dumps`` keeps callgrind's files for callgrind_annotate.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from services import free_port, prepare_workspace, start_gateway, start_mock
from translation import GATEWAY_CPU, LOAD_CPU, bodies


def totals(dump: Path) -> int:
    """The instructions a callgrind dump counted (its ``totals:`` or ``summary:`` line)."""
    for line in dump.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


class Counter:
    """callgrind_control on the gateway's process: zero its counts, dump them and read them,
    by thread (``--separate-threads``: each dump is a file per thread, ``-01`` the first)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid, self.out = pid, out

    def control(self, *flags: str) -> None:
        subprocess.run(
            ["callgrind_control", *flags, str(self.pid)],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def dump(self) -> tuple[int, int]:
        """The instructions since the last zeroing: the event loop's thread's, and all."""
        before = set(self.out.parent.glob(self.out.name + "*"))
        self.control("--dump")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            new = set(self.out.parent.glob(self.out.name + "*")) - before
            if new:
                time.sleep(0.5)  # every thread's file written
                new = set(self.out.parent.glob(self.out.name + "*")) - before
                counts = {dump.name.rsplit("-", 1)[-1]: totals(dump) for dump in new}
                return counts["01"], sum(counts.values())
            time.sleep(0.1)
        raise RuntimeError("callgrind wrote no dump")


def send(client: httpx.Client, path: str, body: dict[str, Any], count: int) -> None:
    for _ in range(count):
        with client.stream("POST", path, json=body) as response:
            response.read()
            if response.status_code != 200:
                raise SystemExit(f"{path}: {response.status_code} {response.text[:200]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument(
        "--dumps",
        type=Path,
        default=None,
        help="Keep callgrind's dumps here (each kind's, in order) for callgrind_annotate.",
    )
    args = parser.parse_args()
    #: Per request kind, each round's instructions a request: the loop's thread's, all.
    counts: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="hepai-instructions-") as scratch:
        root = Path(scratch)
        ws = prepare_workspace(root, database_url=None)
        mock = start_mock(ws, cpus=LOAD_CPU)
        port = free_port()
        if args.dumps is not None:
            args.dumps.mkdir(parents=True, exist_ok=True)
        out = (args.dumps or root).resolve() / "callgrind.out"
        under = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--separate-threads=yes",
            f"--callgrind-out-file={out}",
        ]
        gateway = start_gateway(
            ws, port=port, workers=1, cpus=GATEWAY_CPU, under=under, timeout=600
        )
        counter = Counter(gateway.pid, out)
        headers = {"authorization": f"Bearer {ws.api_key}"}
        try:
            counter.control("--instr=on")
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120
            ) as client:
                # Every kind once first: a process's first requests run code for the first
                # time (lazy imports, caches filling), which no later request repeats.
                for path, body in bodies(args.chunks).values():
                    for stream in (False, True):
                        send(client, path, {**body, "stream": stream}, args.warmup)
                for number in range(args.rounds):
                    for kind, (path, body) in bodies(args.chunks).items():
                        for stream in (False, True):
                            sent = {**body, "stream": True} if stream else body
                            send(client, path, sent, args.warmup)
                            counter.control("--zero")
                            send(client, path, sent, args.requests)
                            loop, every = (n / args.requests for n in counter.dump())
                            counts.setdefault((kind, stream), []).append((loop, every))
                            label = f"{kind}{' (stream)' if stream else ''}"
                            print(
                                f"- round {number + 1}, {label}: {loop:,.0f} in the loop's "
                                f"thread, {every:,.0f} in all",
                                flush=True,
                            )
        finally:
            gateway.stop(timeout=120)
            mock.stop()
    print()
    print("Instructions per request, the least of the rounds (and how far the most was above):")
    print()
    print(
        "| request | whole: event loop | beside chat | all threads "
        "| stream: event loop | beside chat | all threads |"
    )
    print("|---|---|---|---|---|---|---|")
    least = {
        key: [min(column) for column in zip(*rounds, strict=True)] for key, rounds in counts.items()
    }
    for kind in bodies(args.chunks):
        cells = []
        for stream in (False, True):
            rounds = counts[kind, stream]
            loop, every = least[kind, stream]
            spread = max(r[0] for r in rounds) - loop
            cells.append(f"{loop:,.0f} (+{spread:,.0f})")
            cells.append(f"{loop - least['chat', stream][0]:+,.0f}" if kind != "chat" else "")
            cells.append(f"{every:,.0f}")
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
