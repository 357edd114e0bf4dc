"""OpenTelemetry traces: one span per relayed request, exported over OTLP/HTTP.

Off unless an OTLP endpoint is configured, and then the SDK is imported here and nowhere
else: without it the request path pays one ``is None`` check. A span is made when the request
has ended, from what its usage row holds (when it started, how long it took, the model, the
deployment that answered, the status, tokens, time to first token), under the caller's trace
when the request carried a W3C ``traceparent`` header.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

#: Spans are sent in batches this often (milliseconds), off the request path.
EXPORT_EVERY_MS = 1000


class Tracing:
    """The tracer provider and what one span of a request needs."""

    def __init__(self, endpoint: str, service_name: str, version: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        resource = Resource.create({"service.name": service_name, "service.version": version})
        self._provider = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
        self._provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=EXPORT_EVERY_MS)
        )
        self._tracer = self._provider.get_tracer("hepai_server")
        self._propagator = TraceContextTextMapPropagator()
        self._server = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)

    def record(
        self,
        *,
        name: str,
        duration: float,
        attributes: Mapping[str, Any],
        status: int,
        traceparent: bytes | None,
    ) -> None:
        """One finished request's span: it ended now, after ``duration`` seconds."""
        parent = None
        if traceparent:
            parent = self._propagator.extract({"traceparent": traceparent.decode("latin-1")})
        end = time.time_ns()
        span = self._tracer.start_span(
            name,
            context=parent,
            kind=self._server,
            start_time=end - int(duration * 1e9),
            attributes={key: value for key, value in attributes.items() if value is not None},
        )
        if status >= 500:
            span.set_status(self._error)
        span.end(end_time=end)

    def close(self) -> None:
        """Send the spans still waiting, then stop."""
        self._provider.shutdown()
