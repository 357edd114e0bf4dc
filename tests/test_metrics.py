"""/metrics: the counters move with known traffic, exactly, summed over `serve --workers 2`,
as prometheus_client's own parser reads them; and who may scrape."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.stack import Platform, Server

pytestmark = pytest.mark.e2e

CHATS, STREAMS, EMBEDDINGS, UNKNOWN_MODELS, BAD_KEYS = 12, 5, 3, 2, 2


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, providers_file: Path) -> Platform:
    """SQLite is enough: the metrics do not depend on the database."""
    platform = Platform(
        data_dir=tmp_path_factory.mktemp("metrics"), database_url=None, config=providers_file
    )
    platform.cli("db", "upgrade")
    return platform


@pytest.fixture(scope="module")
def key(platform: Platform) -> str:
    return platform.create_user("metered")


@pytest.fixture(scope="module")
def server(platform: Platform) -> Iterator[Server]:
    with platform.serve("--workers", "2") as running:
        yield running


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: Server, **headers: str) -> Samples:
    response = httpx.get(server.url + "/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def call(server: Server, key: str, path: str, body: dict[str, object]) -> httpx.Response:
    # A connection per call, so the kernel spreads them over both processes.
    return httpx.post(
        server.base_url + path, json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def traffic(server: Server, key: str) -> list[httpx.Response]:
    hi = [{"role": "user", "content": "hi"}]
    calls = (
        [("/chat/completions", {"model": "mock/chat", "messages": hi}, key)] * CHATS
        + [("/chat/completions", {"model": "mock/chat", "messages": hi, "stream": True}, key)]
        * STREAMS
        + [("/embeddings", {"model": "mock/embed", "input": "hello"}, key)] * EMBEDDINGS
        + [("/chat/completions", {"model": "no/such-model", "messages": hi}, key)] * UNKNOWN_MODELS
        + [("/chat/completions", {"model": "mock/chat", "messages": hi}, "sk-wrong" + "0" * 40)]
        * BAD_KEYS
    )
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda c: call(server, c[2], c[0], c[1]), calls))


def test_request_counters_move_exactly_with_known_traffic_across_two_workers(
    server: Server, platform: Platform, key: str
) -> None:
    before = scrape(server)
    answers: list[httpx.Response] = []
    rounds = 0
    # The kernel hands connections to whichever process accepts first, and one may get them
    # all: repeat the traffic until both processes have answered some.
    while len(serving_processes(platform, server)) < 2 and rounds < 20:
        batch = traffic(server, key)
        statuses = sorted(answer.status_code for answer in batch)
        assert statuses == [200] * (CHATS + STREAMS + EMBEDDINGS) + [401] * BAD_KEYS + [404] * 2
        answers += batch
        rounds += 1
        time.sleep(1.2)  # a beat: each process writes its histograms once it counted
    assert len(serving_processes(platform, server)) == 2

    chat = {"endpoint": "chat.completions", "model": "mock/chat"}
    served = {**chat, "deployment": "mock/chat-upstream", "status": "200"}
    deadline = time.monotonic() + 30
    while True:  # the meter counts once a second in each process
        after = scrape(server)
        moved = value(after, "hepai_requests_total", **served) - value(
            before, "hepai_requests_total", **served
        )
        if moved >= rounds * (CHATS + STREAMS) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    time.sleep(2.5)  # a beat or two more in both processes: nothing else may arrive
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("hepai_requests_total", **served) == rounds * (CHATS + STREAMS)
    embed = {"endpoint": "embeddings", "model": "mock/embed", "deployment": "mock/embed-upstream"}
    assert delta("hepai_requests_total", **embed, status="200") == rounds * EMBEDDINGS
    nowhere = {"endpoint": "chat.completions", "model": "", "deployment": ""}
    assert delta("hepai_requests_total", **nowhere, status="404") == rounds * UNKNOWN_MODELS
    assert delta("hepai_requests_total", **nowhere, status="401") == rounds * BAD_KEYS
    assert delta("hepai_request_duration_seconds_count", **chat) == rounds * (CHATS + STREAMS)
    assert delta("hepai_time_to_first_token_seconds_count", model="mock/chat") == rounds * STREAMS

    # Tokens agree with the usage rows the same requests left in the database.
    rows = [
        platform.usage_row(answer.headers["x-request-id"])
        for answer in answers
        if answer.status_code == 200 and answer.url.path.endswith("/chat/completions")
    ]
    assert len(rows) == rounds * (CHATS + STREAMS)
    completion = sum(row["completion_tokens"] for row in rows)
    prompt = sum(row["prompt_tokens"] for row in rows)
    assert completion > 0
    assert delta("hepai_tokens_total", model="mock/chat", kind="completion") == completion
    assert delta("hepai_tokens_total", model="mock/chat", kind="prompt") == prompt
    assert value(after, "hepai_usage_pending_rows") == 0
    assert delta("hepai_usage_rows_written_total") >= rounds * (CHATS + STREAMS + EMBEDDINGS + 2)


def serving_processes(platform: Platform, server: Server) -> set[str]:
    """The processes that have counted a request: their histogram files (one per process)."""
    directory = platform.data_dir / "metrics" / str(server.port)
    return {path.stem.rsplit("_", 1)[1] for path in directory.glob("histogram_*.db")}


def test_build_info_is_one_series_whichever_process_answers(server: Server) -> None:
    # Each serving process sets it; "max" mode shows it once, as 1.
    for _ in range(4):
        assert value(scrape(server), "hepai_build_info", version="0.1.0") == 1


def test_metrics_refuse_a_forwarded_request_without_a_token(server: Server) -> None:
    response = httpx.get(server.url + "/metrics", headers={"x-forwarded-for": "192.0.2.7"})
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


def test_metrics_ask_for_the_token_when_one_is_set(platform: Platform) -> None:
    with platform.serve(env={"HEPAI_SERVER_METRICS_TOKEN": "scrape-secret"}) as server:
        assert httpx.get(server.url + "/metrics").status_code == 401
        wrong = httpx.get(server.url + "/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert scrape(server, authorization="Bearer scrape-secret")
