"""OpenTelemetry: with an OTLP endpoint each relayed request is one span, under the caller's
trace; without one the SDK is never imported."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.stack import Platform


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, providers_file: Path) -> Platform:
    """SQLite is enough: spans do not depend on the database."""
    platform = Platform(
        data_dir=tmp_path_factory.mktemp("tracing"), database_url=None, config=providers_file
    )
    platform.cli("db", "upgrade")
    return platform


@pytest.fixture(scope="module")
def user_key(platform: Platform) -> str:
    return platform.create_user("traced")


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Collector:
    """An OTLP/HTTP trace receiver on loopback that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.resources: list[dict[str, Any]] = []
        collector = self

        class Receive(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    collector.resources.append(attributes(resource_spans.resource.attributes))
                    for scope in resource_spans.scope_spans:
                        collector.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Receive)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def span_of(self, request_id: str, timeout: float = 20) -> Span:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for span in self.spans:
                if attributes(span.attributes).get("hepai.request_id") == request_id:
                    return span
            time.sleep(0.1)
        raise AssertionError(f"no span for {request_id}")


def attributes(values: Any) -> dict[str, Any]:
    found = {}
    for item in values:
        kind = item.value.WhichOneof("value")
        found[item.key] = getattr(item.value, kind) if kind else None
    return found


@contextmanager
def collector() -> Iterator[Collector]:
    running = Collector()
    thread = threading.Thread(target=running.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.server.shutdown()
        running.server.server_close()


@pytest.mark.e2e
def test_a_request_is_a_span_under_the_callers_trace(platform: Platform, user_key: str) -> None:
    with (
        collector() as otlp,
        platform.serve(env={"HEPAI_SERVER_OTLP_ENDPOINT": otlp.url}) as server,
    ):
        answer = httpx.post(
            server.base_url + "/chat/completions",
            json={"model": "mock/chat", "messages": [{"role": "user", "content": "hi"}]},
            headers={
                "authorization": f"Bearer {user_key}",
                "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
            },
        )
        assert answer.status_code == 200
        refused = httpx.post(
            server.base_url + "/chat/completions",
            json={"model": "failover/all-failing", "messages": [{"role": "user", "content": "x"}]},
            headers={"authorization": f"Bearer {user_key}"},
        )
        assert refused.status_code == 502
        span = otlp.span_of(answer.headers["x-request-id"])
        failed = otlp.span_of(refused.headers["x-request-id"])
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == PARENT_ID
    assert span.kind == Span.SPAN_KIND_SERVER
    assert span.name == "chat.completions mock/chat"
    seen = attributes(span.attributes)
    assert seen["gen_ai.request.model"] == "mock/chat"
    assert seen["http.response.status_code"] == 200
    assert seen["gen_ai.usage.output_tokens"] > 0
    assert seen["hepai.deployment"] == "mock/chat-upstream"
    assert span.end_time_unix_nano > span.start_time_unix_nano
    assert failed.status.code == failed.status.STATUS_CODE_ERROR
    assert failed.trace_id.hex() != TRACE_ID  # a trace of its own
    assert {"service.name": "hepai-server"}.items() <= otlp.resources[0].items()


def test_without_an_endpoint_the_sdk_is_never_imported() -> None:
    probe = (
        "import sys, hepai_server.app, hepai_server.gateway.frame, hepai_server.gateway.runtime;"
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry')];"
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
