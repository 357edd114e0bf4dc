"""Routes with fixed paths are found by one lookup, and answer exactly as the router's walk
through the list answered: the same route for each path and method, 405 for another method,
parameter routes and URL building as before."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Match, Route
from starlette.testclient import TestClient

from hepai_server.portal.routes import portal_routes
from hepai_server.routes.api import api_routes
from hepai_server.routes.table import PathTable, fixed_first, shadowed


def named(text: str) -> object:
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{text} {dict(request.path_params)}")

    return endpoint


def test_the_platforms_fixed_paths_are_shadowed_by_no_parameter_route() -> None:
    """Were one, the table would change which route answers it."""
    routes = api_routes() + portal_routes()
    assert shadowed(routes) == []
    table = fixed_first(routes)[0]
    assert isinstance(table, PathTable)
    assert "/apiv2/v1/messages" in table.by_path and "/apiv2/chat/completions" in table.by_path


def test_a_parameter_route_before_a_fixed_path_is_reported() -> None:
    routes: list[BaseRoute] = [
        Route("/files/{file_id}", named("one"), methods=["GET"]),
        Route("/files/search", named("search"), methods=["GET"]),
        Route("/files/search", named("search"), methods=["POST"]),
    ]
    assert shadowed(routes) == [("/files/search", "/files/{file_id}")]


def test_each_path_and_method_reaches_its_route() -> None:
    routes: list[BaseRoute] = [
        Route("/files", named("list"), methods=["GET"], name="files"),
        Route("/files", named("upload"), methods=["POST"]),
        Route("/files/{file_id}", named("file"), methods=["GET"], name="file"),
        Route("/health", named("health")),
    ]
    app = Starlette(routes=fixed_first(routes))
    with TestClient(app) as client:
        assert client.get("/files").text == "list {}"
        assert client.post("/files").text == "upload {}"
        assert client.get("/files/f1").text == "file {'file_id': 'f1'}"
        assert client.get("/health").text == "health {}"
        wrong = client.delete("/files")
        assert wrong.status_code == 405
        # Starlette joins the route's set of methods, in the set's (hash seed's) order.
        assert sorted(wrong.headers["allow"].split(", ")) == ["GET", "HEAD"]
        assert client.get("/nowhere").status_code == 404
    assert app.url_path_for("files") == "/files"
    assert app.url_path_for("file", file_id="f2") == "/files/f2"


def test_the_table_matches_only_http_requests_for_its_paths() -> None:
    table = PathTable([Route("/a", named("a"), methods=["POST"])])
    http = {"type": "http", "path": "/a", "root_path": "", "method": "POST"}
    assert table.matches(http)[0] is Match.FULL
    assert table.matches({**http, "method": "GET"})[0] is Match.PARTIAL
    assert table.matches({**http, "path": "/b"})[0] is Match.NONE
    assert table.matches({"type": "websocket", "path": "/a", "root_path": ""})[0] is Match.NONE
