"""The compose topology, without Docker: the user guide's workflow through nginx in front of two
replicas (PostgreSQL, Redis, SeaweedFS, a built-in worker), and a replica stopped mid-run with
no failed call, neither while it is taken out the documented way nor when it just stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from hepai import HepAI
from prometheus_client.parser import text_string_to_metric_families

from tests.topology import Topology, topology, wait_for_models

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

MODELS = ["demo/mock-chat", "demo/mock-embedding", "hepai/markitdown"]


@pytest.fixture(scope="module")
def place() -> Iterator[Topology]:
    with topology(["markitdown"]) as running:
        wait_for_models(running, MODELS)
        yield running


def user_guide(place: Topology, tmp_path: Path) -> None:
    """The README's workflow, with both clients, as a user runs it."""
    client = openai.OpenAI(base_url=place.base_url, api_key=place.key, max_retries=0)
    assert set(MODELS) <= {model.id for model in client.models.list()}
    stream = client.chat.completions.create(
        model="demo/mock-chat", messages=[{"role": "user", "content": "Hello"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text
    embedding = client.embeddings.create(model="demo/mock-embedding", input="Hello")
    assert embedding.data[0].embedding
    client.close()

    hepai = HepAI(base_url=place.base_url, api_key=place.key)
    document = tmp_path / "notes.md"
    document.write_text("# Beam notes\n\nThe beam was stable all night.\n")
    uploaded = hepai.files.upload(str(document), purpose="user_data")
    assert uploaded.id.startswith("file-")
    markdown = hepai.get_remote_model("hepai/markitdown").interface(file_id=uploaded.id)
    assert "The beam was stable all night." in str(markdown)
    hepai.close()


def test_the_user_guide_works_through_nginx(place: Topology, tmp_path: Path) -> None:
    user_guide(place, tmp_path)


class Traffic:
    """Calls in a loop on threads until stopped; every failure is kept."""

    def __init__(self, calls: list[Callable[[], None]]) -> None:
        self.calls = calls
        self.done = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(3)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, offset: int) -> None:
        turn = offset
        while not self._stop.is_set():
            try:
                self.calls[turn % len(self.calls)]()
                self.done += 1
            except Exception as error:  # every kind counts as a failed call
                self.failures.append(f"{type(error).__name__}: {error}")
            turn += 1


def model_calls(place: Topology) -> list[Callable[[], None]]:
    client = openai.OpenAI(base_url=place.base_url, api_key=place.key, max_retries=0)
    hello = [{"role": "user", "content": "Hello"}]

    def chat() -> None:
        answer = client.chat.completions.create(model="demo/mock-chat", messages=hello)  # type: ignore[arg-type]
        assert answer.choices[0].message.content

    def stream() -> None:
        chunks = client.chat.completions.create(
            model="demo/mock-chat",
            messages=hello,  # type: ignore[arg-type]
            stream=True,
            extra_body={"mock": {"chunks": 30, "delay": 0.02}},
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    def embed() -> None:
        assert client.embeddings.create(model="demo/mock-embedding", input="x").data

    def models() -> None:
        assert client.models.list().data

    return [chat, stream, embed, models]


def get_calls(place: Topology) -> list[Callable[[], None]]:
    headers = {"authorization": f"Bearer {place.key}"}

    def get(path: str) -> Callable[[], None]:
        def call() -> None:
            answer = httpx.get(place.base_url + path, headers=headers, timeout=30)
            answer.raise_for_status()

        return call

    return [get("/models"), get("/models/demo/mock-chat"), get("/files")]


def served(replica_url: str) -> float:
    """Requests a replica answered, from its own /metrics (scraped on loopback)."""
    text = httpx.get(replica_url + "/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "hepai_requests_total"
    )


def test_a_replica_stopped_mid_run_fails_no_call(place: Topology) -> None:
    # 1. Taken out of nginx, then stopped, while streams run on it: nothing fails.
    with Traffic(model_calls(place)) as traffic:
        time.sleep(1.5)
        assert served(place.replicas[0].url) > 0 and served(place.replicas[1].url) > 0
        place.take_out(0)
        assert place.stop_replica(0) is not None
        time.sleep(1.5)
        place.start_replica(0)
        place.put_back(0)
        time.sleep(1.5)
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.done > 20

    # 2. Just stopped (SIGTERM, nginx not told): nginx retries what is safe to retry.
    with Traffic(get_calls(place)) as traffic:
        time.sleep(1.0)
        assert place.stop_replica(1) is not None
        time.sleep(2.0)
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.done > 20
    # nginx's first error from the stopping replica may be a request it was serving, reset:
    # that takes the replica out for fail_timeout (5 s, deploy/nginx) before nginx connects
    # again. Past it, nginx tries the stopped replica anew, is refused, and goes on.
    time.sleep(5.5)
    for call in get_calls(place) * 2:
        call()
    # nginx found the stopped replica refusing, and sent those requests to the other one.
    errors = (place.workdir / "nginx" / "error.log").read_text()
    assert "Connection refused) while connecting to upstream" in errors
    assert place.replicas[1].address in errors
    place.start_replica(1)
