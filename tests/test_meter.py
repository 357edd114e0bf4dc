"""The meter's arithmetic: a batch observed at once gives the histogram that observing each
value gives, and request rows become the series they should, with bounded labels."""

from __future__ import annotations

import random
import time

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from hepai_server.gateway.ledger import UsageRow
from hepai_server.gateway.meter import Meter
from hepai_server.telemetry.metrics import LATENCY_BUCKETS, Metrics, observe_all


def test_observing_a_batch_equals_observing_each_value() -> None:
    rng = random.Random(7)
    # Values on the bucket bounds too: a bound belongs to its own bucket (le).
    values = [rng.expovariate(2.0) for _ in range(1000)] + list(LATENCY_BUCKETS) + [0.0, 1e9]
    one, each = CollectorRegistry(), CollectorRegistry()
    batched = Histogram("latency", "x", ["model"], buckets=LATENCY_BUCKETS, registry=one)
    singly = Histogram("latency", "x", ["model"], buckets=LATENCY_BUCKETS, registry=each)
    observe_all(batched.labels("m"), values)
    for value in values:
        singly.labels("m").observe(value)
    assert samples(one) == samples(each)


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """Every sample but the creation time, the sum rounded (it is added in another order)."""
    return {
        (sample.name, sample.labels.get("le", "")): round(sample.value, 6)
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def row(
    model: str,
    deployment: str | None,
    status: int,
    *,
    stream: bool = False,
    endpoint: str = "chat.completions",
) -> UsageRow:
    return UsageRow(
        "req-1", 1, 1, endpoint, model, deployment, stream, status, None,
        10, 5, 15, 0, None, None, None, False, 250.0, 40.0 if stream else None,
        0, None, None, None, time.time(),
    )  # fmt: skip


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    assert metrics.registry is not None
    return metrics.registry.get_sample_value(name, labels)


def test_rows_become_series_and_unknown_models_mint_none() -> None:
    metrics = Metrics(None)
    meter = Meter.__new__(Meter)  # only the counting half: no engine, recorder or loop
    meter.metrics, meter._rows, meter._children = metrics, [], {}
    for item in (
        row("mock/chat", "mock", 200),
        row("mock/chat", "mock", 200, stream=True),
        row("no/such-model-" + "x" * 50, None, 404),
    ):
        meter.add(item)
    meter.count_rows()
    ok = {"endpoint": "chat.completions", "model": "mock/chat", "deployment": "mock"}
    assert sample(metrics, "hepai_requests_total", **ok, status="200") == 2
    nowhere = {"endpoint": "chat.completions", "model": "", "deployment": ""}
    assert sample(metrics, "hepai_requests_total", **nowhere, status="404") == 1
    chat = {"endpoint": "chat.completions", "model": "mock/chat"}
    assert sample(metrics, "hepai_request_duration_seconds_count", **chat) == 2
    assert sample(metrics, "hepai_request_duration_seconds_sum", **chat) == 0.5
    assert sample(metrics, "hepai_time_to_first_token_seconds_count", model="mock/chat") == 1
    assert sample(metrics, "hepai_tokens_total", model="mock/chat", kind="completion") == 10
    assert sample(metrics, "hepai_tokens_total", model="", kind="prompt") == 10
    assert metrics.registry is not None
    assert "no/such-model" not in generate_latest(metrics.registry).decode()


def test_worker_functions_the_caller_names_mint_no_series() -> None:
    metrics = Metrics(None)
    meter = Meter.__new__(Meter)
    meter.metrics, meter._rows, meter._children = metrics, [], {}
    for function in ("add", "made_up_1", "made_up_2"):
        meter.add(row("alice/calc", "worker:w1", 200, endpoint=f"worker.{function}"))
    meter.count_rows()
    labels = {"endpoint": "worker", "model": "alice/calc", "deployment": "worker:w1"}
    assert sample(metrics, "hepai_requests_total", **labels, status="200") == 3
    assert metrics.registry is not None
    assert "made_up" not in generate_latest(metrics.registry).decode()
