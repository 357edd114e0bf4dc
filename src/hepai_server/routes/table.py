"""Routes found by their path in one lookup.

Starlette's router tries its routes in turn, a regular expression each, until one matches:
a route's place in the list was its cost. The platform serves every API route under three
prefixes and the portal beside them, so the Anthropic Messages route, 41st, cost 17 µs a
request to find where ``/apiv2/chat/completions``, first, cost 1, and a portal page 86
(benchmarks/routing_cpu.py, RESULTS.md). ``PathTable`` holds the routes whose paths have no
parameters (every relaying endpoint's, most others') in a dict by path, and stands first in
the list: a request for any of them is found at the first step, the others as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeGuard

from starlette._utils import get_route_path  # the path routes match: less any root_path
from starlette.routing import BaseRoute, Match, NoMatchFound, Route
from starlette.types import Receive, Scope, Send


class PathTable(BaseRoute):
    """Routes with fixed paths, by path. A path's routes differ by method: the one that takes
    the request's method answers it, or, where none does, the first (405, as the router
    answers a partial match)."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)
        self.by_path: dict[str, list[Route]] = {}
        for route in self.routes:
            self.by_path.setdefault(route.path, []).append(route)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """The match of the path's route that takes the request, its child scope naming it as
        ``route``: the router sets ``scope["route"]`` to this table, then updates the scope
        with the child's, so ``handle`` finds the route there instead of looking again."""
        if scope["type"] != "http":
            return Match.NONE, {}
        routes = self.by_path.get(get_route_path(scope))
        if routes is None:
            return Match.NONE, {}
        partial: Scope | None = None
        for route in routes:
            match, child_scope = route.matches(scope)  # a new dict each call: ours to add to
            if match is Match.FULL:
                child_scope["route"] = route
                return match, child_scope
            if match is Match.PARTIAL and partial is None:
                child_scope["route"] = route
                partial = child_scope
        return (Match.NONE, {}) if partial is None else (Match.PARTIAL, partial)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await scope["route"].handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        for route in self.routes:
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                continue
        raise NoMatchFound(name, path_params)


def fixed_first(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """``routes`` with those of fixed paths in a ``PathTable`` before the rest.

    A fixed path is then found before any parameter route that would match it too, wherever
    the two stood; ``shadowed`` lists such pairs, and the platform's routes have none."""
    fixed = [route for route in routes if _is_fixed(route)]
    return [PathTable(fixed), *(route for route in routes if not _is_fixed(route))]


def shadowed(routes: Sequence[BaseRoute]) -> list[tuple[str, str]]:
    """Fixed paths that a parameter route listed before them matches too (for the same
    method): in list order that route answered them, in ``fixed_first``'s the fixed one does."""
    found: list[tuple[str, str]] = []
    for index, route in enumerate(routes):
        if not _is_fixed(route):
            continue
        for method in sorted(route.methods or {"GET"}):
            scope = {"type": "http", "path": route.path, "root_path": "", "method": method}
            for earlier in routes[:index]:
                if not _is_fixed(earlier) and earlier.matches(scope)[0] is Match.FULL:
                    pair = (route.path, getattr(earlier, "path", repr(earlier)))
                    if pair not in found:
                        found.append(pair)
    return found


def _is_fixed(route: BaseRoute) -> TypeGuard[Route]:
    return type(route) is Route and not route.param_convertors
