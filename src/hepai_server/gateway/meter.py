"""The meter: request series from usage rows, and the gauges, once a beat, off the request path.

A request's frame hands its usage row here (one list append); every BEAT seconds the rows
gathered are counted into the Prometheus series in one pass, summed per label set first, and
the gauges (usage backlog, database pool, worker calls in flight) are read and set. So metrics
cost the request path nothing but the append, and keep flowing while the database is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, defaultdict
from typing import Any

from prometheus_client import Counter as CounterMetric
from prometheus_client import Gauge, Histogram
from sqlalchemy import Engine

from hepai_server import __version__
from hepai_server.gateway.auth import Authenticator
from hepai_server.gateway.health import Health
from hepai_server.gateway.ledger import UsageRow
from hepai_server.gateway.routing import Occupancy
from hepai_server.gateway.usage import UsageRecorder
from hepai_server.telemetry.metrics import Metrics, observe_all

log = logging.getLogger(__name__)

#: Seconds between two passes: how far /metrics may trail the requests it counts.
BEAT = 1.0

Metric = CounterMetric | Gauge | Histogram


class Meter:
    def __init__(
        self,
        metrics: Metrics,
        *,
        engine: Engine,
        recorder: UsageRecorder,
        auth: Authenticator,
        occupancy: Occupancy,
        health: Health,
    ) -> None:
        self.metrics = metrics
        self._engine = engine
        self._recorder = recorder
        self._auth = auth
        self._occupancy = occupancy
        self._health = health
        self._rows: list[UsageRow] = []
        #: Label children by series and labels: ``labels()`` validates and locks on each call.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._seen = {"stale": 0, "written": 0, "failures": 0}
        self._workers: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        metrics.info.labels(__version__).set(1)

    def add(self, row: UsageRow) -> None:
        """Count one finished request (at the next beat)."""
        self._rows.append(row)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="meter")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.beat()
        self.metrics.process_exited(os.getpid())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(BEAT)
            try:
                self.beat()
            except Exception:
                log.exception("metrics: a beat failed; the next one tries again")

    def beat(self) -> None:
        self.count_rows()
        self.set_gauges()

    def child(self, metric: Metric, *labels: str) -> Any:
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def count_rows(self) -> None:
        rows, self._rows = self._rows, []
        if not rows:
            return
        metrics = self.metrics
        requests: Counter[tuple[str, str, str, str]] = Counter()
        tokens: Counter[tuple[str, str]] = Counter()
        durations: dict[tuple[str, str], list[float]] = defaultdict(list)
        ttfts: dict[str, list[float]] = defaultdict(list)
        for row in rows:
            # Only ids that reached a deployment are labels: a request for "no/such-model"
            # must not mint a series.
            model = row.model if row.deployment else ""
            # Nor a worker function's name, which the caller chooses: workers are one endpoint.
            endpoint = "worker" if row.endpoint.startswith("worker.") else row.endpoint
            requests[(endpoint, model, row.deployment or "", str(row.status_code))] += 1
            durations[(endpoint, model)].append(row.latency_ms / 1000)
            if row.stream and row.ttft_ms is not None:
                ttfts[model].append(row.ttft_ms / 1000)
            if row.prompt_tokens:
                tokens[(model, "prompt")] += row.prompt_tokens
            if row.completion_tokens:
                tokens[(model, "completion")] += row.completion_tokens
        for request_labels, count in requests.items():
            self.child(metrics.requests, *request_labels).inc(count)
        for token_labels, count in tokens.items():
            self.child(metrics.tokens, *token_labels).inc(count)
        for duration_labels, seconds in durations.items():
            observe_all(self.child(metrics.duration, *duration_labels), seconds)
        for model, seconds in ttfts.items():
            observe_all(self.child(metrics.ttft, model), seconds)

    def set_gauges(self) -> None:
        metrics, recorder = self.metrics, self._recorder
        metrics.usage_pending.set(recorder.pending)
        oldest = recorder.oldest()
        metrics.usage_lag.set(max(0.0, time.time() - oldest) if oldest is not None else 0.0)
        for name, now, counter in (
            ("stale", self._auth.stale_answers, metrics.auth_stale),
            ("written", recorder.written, metrics.usage_written),
            ("failures", recorder.failed_writes, metrics.usage_write_failures),
        ):
            if now > self._seen[name]:
                counter.inc(now - self._seen[name])
            self._seen[name] = now
        pool: Any = self._engine.pool
        with contextlib.suppress(AttributeError):  # pools without counts (SQLite in memory)
            metrics.db_pool_in_use.set(pool.checkedout())
            metrics.db_pool_open.set(pool.checkedin() + pool.checkedout())
        metrics.draining.set(1 if self._health.draining else 0)
        metrics.tasks.set(len(asyncio.all_tasks()))
        busy = self._occupancy.snapshot()
        for worker in self._workers - busy.keys():
            self.child(metrics.worker_in_flight, worker).set(0)
        for worker, calls in busy.items():
            self.child(metrics.worker_in_flight, worker).set(calls)
        self._workers |= busy.keys()
