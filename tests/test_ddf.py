"""DDF: real hepai-SDK workers register with the server and the real hepai client calls them."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hepai import HepAI
from hepai.components.haiddf.hclient._exceptions import HAPIStatusError

from tests.stack import Platform, Server, hepai_worker
from tests.workers.registration import worker_info


def hepai(server: Server, key: str) -> HepAI:
    return server.hepai(key)


def model_ids(server: Server, key: str) -> set[str]:
    response = httpx.get(server.base_url + "/models", headers={"x-api-key": key})
    return {row["id"] for row in response.json()["data"]}


def register(server: Server, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        server.base_url + "/worker/register_worker",
        headers={"Authorization": f"Bearer {key}"},
        json=body,
    )


def test_remote_calls_return_every_json_type_and_stream(
    platform: Platform, server: Server, unique
) -> None:
    owner = unique("ddf-owner")
    key = platform.create_user(owner)
    name = f"{owner}/calculator"
    with hepai_worker(server, key, name, "groups: all"):
        client = hepai(server, key)
        rows = httpx.get(server.base_url + "/models", headers={"x-api-key": key}).json()["data"]
        row = next(r for r in rows if r["id"] == name)
        assert row["object"] == "model" and row["owned_by"] == [owner]
        model = client.get_remote_model(name)
        assert model.add(1, b=5) == 6
        half = model.half(3)
        assert half == 1.5 and isinstance(half, float)
        assert model.upto(4) == [0, 1, 2, 3]
        assert model.describe() == {"name": "calculator", "nested": {"ok": True}}
        assert model.nothing() is None
        assert list(model.count(n=3, stream=True)) == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert list(model.acount(n=2, stream=True)) == [
            {"i": 0, "async": True},
            {"i": 1, "async": True},
        ]
        identity = model.whoami()
        assert identity["username"] == owner and identity["request_id"].startswith("req-")


def test_worker_errors_pass_through_with_their_status(
    platform: Platform, server: Server, unique
) -> None:
    owner = unique("ddf-errors")
    key = platform.create_user(owner)
    name = f"{owner}/calculator"
    with hepai_worker(server, key, name):
        model = hepai(server, key).get_remote_model(name)
        with pytest.raises(HAPIStatusError) as caught:
            model.fail("boom")
        assert caught.value.status_code == 400
        assert caught.value.body == {"detail": "ValueError: boom\nValueError: boom"}
        missing = httpx.post(
            server.base_url + "/worker/unified_gate/",
            params={"model": name, "function": "no_such_function"},
            headers={"x-api-key": key},
            json={},
        )
        assert missing.status_code == 404 and "no_such_function" in missing.json()["detail"]


@pytest.mark.both_databases
def test_permissions_owner_user_group_all_denied(platform: Platform, server: Server, unique):
    owner = unique("perm-owner")
    key = platform.create_user(owner)
    listed, member = unique("listed"), unique("member")
    listed_key = platform.create_user(listed)
    member_key = platform.create_user(member, "--group", "ddf-physics")
    stranger_key = platform.create_user(unique("stranger"))
    admin_key = platform.create_user(unique("ddf-admin"), "--admin")
    shared, private, public = (f"{owner}/shared", f"{owner}/private", f"{owner}/public")
    with (
        hepai_worker(server, key, shared, f"groups: ddf-physics; users: {listed}"),
        hepai_worker(server, key, private),
        hepai_worker(server, key, public, "groups: all"),
    ):
        expected = {
            key: {shared, private, public},
            listed_key: {shared, public},
            member_key: {shared, public},
            stranger_key: {public},
            admin_key: {shared, private, public},
        }
        for caller, allowed in expected.items():
            assert model_ids(server, caller) & {shared, private, public} == allowed
            for name in (shared, private, public):
                response = httpx.post(
                    server.base_url + "/worker/unified_gate/",
                    params={"model": name, "function": "add"},
                    headers={"x-api-key": caller},
                    json={"args": [2, 3]},
                )
                if name in allowed:
                    assert response.status_code == 200 and response.json() == 5
                else:
                    assert response.status_code == 404
                    assert response.json()["error"]["code"] == "model_not_found"
        with pytest.raises(HAPIStatusError) as caught:
            hepai(server, stranger_key).get_remote_model(private)
        assert caught.value.status_code == 404


@pytest.mark.both_databases
def test_model_name_takeover_is_refused(platform: Platform, server: Server, unique) -> None:
    owner, thief = unique("name-owner"), unique("thief")
    key, thief_key = platform.create_user(owner), platform.create_user(thief)
    admin_key = platform.create_user(unique("name-admin"), "--admin")
    name = f"team/{unique('bge')}"
    assert register(server, key, worker_info(name, unique("wk"))).status_code == 200
    taken = register(server, thief_key, worker_info(name, unique("wk")))
    assert taken.status_code == 403 and "belongs to another user" in taken.json()["detail"]
    same_id = register(server, thief_key, worker_info(unique("other/name"), "wk-" + owner))
    assert same_id.status_code == 200, "a fresh id and name are the thief's to take"
    assert register(server, admin_key, worker_info(name, unique("wk"))).status_code == 200
    provider = register(server, thief_key, worker_info("mock/chat", unique("wk")))
    assert provider.status_code == 409


def test_stop_removes_the_worker_until_it_registers_again(
    platform: Platform, server: Server, unique
) -> None:
    key = platform.create_user(unique("stopper"))
    worker_id, name = unique("wk-stop"), unique("stopper/model")
    assert register(server, key, worker_info(name, worker_id)).status_code == 200
    client = hepai(server, key)
    assert name in model_ids(server, key)
    stopped = client.stop_worker(worker_id)
    assert stopped.stopped is True and stopped.id == worker_id
    assert name not in model_ids(server, key)
    assert register(server, key, worker_info(name, worker_id)).status_code == 200
    assert name in model_ids(server, key)


@pytest.mark.both_databases
def test_restarted_server_still_knows_its_workers(platform: Platform, unique) -> None:
    key = platform.create_user(unique("durable"))
    worker_id, name = unique("wk-durable"), unique("durable/model")
    with platform.serve() as first:
        assert register(first, key, worker_info(name, worker_id)).status_code == 200
    with platform.serve() as second:
        assert name in model_ids(second, key)


def test_two_workers_share_load_and_one_dying_fails_no_call(
    platform: Platform, server: Server, unique
) -> None:
    owner = unique("pair")
    key = platform.create_user(owner)
    name = f"{owner}/pair"
    with (
        hepai_worker(server, key, name, worker_id=unique("wk-a")) as first,
        hepai_worker(server, key, name, worker_id=unique("wk-b")),
    ):
        model = hepai(server, key).get_remote_model(name)
        pids = {model.pid() for _ in range(30)}
        assert len(pids) == 2, "both workers take calls"
        first.send_signal(signal.SIGKILL)  # dies without deregistering
        first.wait()
        survivors = {model.pid() for _ in range(20)}
        assert len(survivors) == 1 and survivors < pids


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise LookupError("VmHWM")


def test_200_mb_gate_body_passes_with_bounded_server_memory(platform: Platform, unique) -> None:
    owner = unique("bulk")
    key = platform.create_user(owner)
    name = f"{owner}/bulk"
    size = 200 * 1024 * 1024
    with platform.serve() as server, hepai_worker(server, key, name):
        assert hepai(server, key).get_remote_model(name).length("warm") == 4
        before = peak_rss_mb(server.process.pid)
        body = b'{"args": ["' + b"a" * size + b'"]}'
        response = httpx.post(
            server.base_url + "/worker/unified_gate/",
            params={"model": name, "function": "length"},
            headers={"x-api-key": key, "content-type": "application/json"},
            content=body,
            timeout=300,
        )
        del body
        assert response.status_code == 200 and response.json() == size
        grown = peak_rss_mb(server.process.pid) - before
        assert grown < 64, f"the server's peak memory grew by {grown:.0f} MB"


def test_openai_routes_reach_worker_methods_with_usage(
    platform: Platform, server: Server, unique
) -> None:
    owner = unique("llm-owner")
    key = platform.create_user(owner)
    name = f"{owner}/llm"
    with hepai_worker(server, key, name):
        client = server.openai(key)
        plain_id, stream_id = unique("wk-chat"), unique("wk-stream")
        reply = client.chat.completions.create(
            model=name,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-request-id": plain_id},
        )
        expected = "".join(f"{name}-says-{i} " for i in range(2)) + f"to-{owner} "
        assert reply.choices[0].message.content == expected, "with the caller's identity"
        assert reply.model == name
        stream = client.chat.completions.create(
            model=name,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_headers={"x-request-id": stream_id},
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
        assert all(c.choices for c in chunks), "the usage chunk the gateway asked for is dropped"
        vectors = client.embeddings.create(model=name, input=["abc", "de"], encoding_format="float")
        assert [d.embedding for d in vectors.data] == [[3.0, 0.5], [2.0, 0.5]]
        for request_id in (plain_id, stream_id):
            row = platform.usage_row(request_id)
            assert row["status_code"] == 200 and row["total_tokens"] == 7, (request_id, row)
            assert row["deployment"].startswith("worker:") and row["model"] == name
        assert platform.usage_row(stream_id)["usage_estimated"] in (False, 0)


def test_multipart_file_calls_reach_the_worker_as_json(
    platform: Platform, server: Server, unique, tmp_path: Path
) -> None:
    owner = unique("multipart")
    key = platform.create_user(owner)
    name = f"{owner}/files"
    document = tmp_path / "notes.txt"
    document.write_text("high energy physics " * 1000)
    with hepai_worker(server, key, name):
        model = hepai(server, key).get_remote_model(name)
        with document.open("rb") as handle:
            answer = model.file_info(file=handle, title="notes", pages=3, flags=[True, False])
    assert answer["version"] == 1
    assert answer["kwargs"] == {"title": "notes", "pages": "3", "flags": ["true", "false"]}
    (sent,) = answer["files"]
    assert sent["field"] == "file" and sent["filename"] == "notes.txt"
    assert sent["size"] == document.stat().st_size and sent["text"] == document.read_text()


def test_permanent_stop_shuts_the_worker_down(platform: Platform, server: Server, unique) -> None:
    owner = unique("shutdown")
    key = platform.create_user(owner)
    name = f"{owner}/calculator"
    with hepai_worker(server, key, name) as process:
        client = hepai(server, key)
        worker_id = client.get_worker_info(model_name=name).id
        stopped = client.stop_worker(worker_id, permanent=True)
        assert stopped.stopped is True and stopped.shutdown is True
        assert process.wait(20) is not None, "the worker process exits"
        assert name not in model_ids(server, key)


@pytest.mark.both_databases
def test_every_gateway_process_dispatches_from_the_shared_registry(
    platform: Platform, unique
) -> None:
    owner = unique("multi-gateway")
    key = platform.create_user(owner)
    name = f"{owner}/calculator"
    with platform.serve("--workers", "2") as server, hepai_worker(server, key, name):
        # Fresh connections land on either gateway process; each must find the worker.
        for n in range(20):
            response = httpx.post(
                server.base_url + "/worker/unified_gate/",
                params={"model": name, "function": "add"},
                headers={"x-api-key": key, "connection": "close"},
                json={"args": [n, 1]},
            )
            assert response.status_code == 200 and response.json() == n + 1
