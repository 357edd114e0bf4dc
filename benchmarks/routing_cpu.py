"""CPU to find a request's route among the platform's: Starlette's walk through the list, and
the list with its fixed paths in a table first (src/hepai_server/routes/table.py).

    PYTHONPATH=src .venv/bin/python benchmarks/routing_cpu.py [--lookups 20000]

Each path is looked up as the router does (every route's ``matches`` in turn until one
matches in full), in interleaved rounds; prints the best round's µs per lookup, as a
markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match

from hepai_server.portal.routes import portal_routes
from hepai_server.routes.api import api_routes
from hepai_server.routes.table import fixed_first

#: Requests as clients send them: the OpenAI API under each prefix, Anthropic Messages, a
#: file's content (a parameter route), a portal page.
REQUESTS = [
    ("POST", "/apiv2/chat/completions"),
    ("POST", "/apiv2/responses"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/apiv2/v1/chat/completions"),
    ("POST", "/apiv2/v1/messages"),
    ("GET", "/apiv2/files/file-abc/content"),
    ("GET", "/usage"),
    ("GET", "/knowledge/vs_abc"),
]


def find(routes: Sequence[BaseRoute], method: str, path: str) -> int | None:
    """The place of the route that answers, as Starlette's router finds it."""
    scope = {"type": "http", "path": path, "root_path": "", "method": method}
    for place, route in enumerate(routes):
        if route.matches(scope)[0] is Match.FULL:
            return place
    return None


def per_lookup(routes: Sequence[BaseRoute], method: str, path: str, lookups: int) -> float:
    started = time.process_time_ns()
    for _ in range(lookups):
        find(routes, method, path)
    return (time.process_time_ns() - started) / lookups / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    listed = api_routes() + portal_routes()
    tabled = fixed_first(listed)
    best: dict[tuple[str, bool], float] = {}
    for _ in range(args.rounds):
        for method, path in REQUESTS:
            for table, routes in ((False, listed), (True, tabled)):
                took = per_lookup(routes, method, path, args.lookups)
                best[path, table] = min(best.get((path, table), took), took)
    print(f"{len(listed)} routes, {len(listed) - len(tabled) + 1} of them in the table")
    print()
    print("| request | place in the list | list: µs | table first: µs |")
    print("|---|---|---|---|")
    for method, path in REQUESTS:
        place = find(listed, method, path)
        print(
            f"| {method} {path} | {'-' if place is None else place + 1} "
            f"| {best[path, False]:.1f} | {best[path, True]:.1f} |"
        )


if __name__ == "__main__":
    main()
