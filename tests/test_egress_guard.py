"""The egress guard in a real gateway: with the allowed networks narrowed to 127.0.0.2, no
registration, redirect or re-pointed name makes the gateway connect anywhere else (a canary
listening on 127.0.0.1 and 127.0.0.3 counts every connection), while a worker inside the
allowed network, and the platform's own built-in workers, keep working."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests import documents
from tests.stack import Platform, Server, free_port, run_worker
from tests.test_ddf import register
from tests.workers.registration import worker_info

ALLOWED = "127.0.0.2"


class Canary:
    """TCP listeners that count the connections made to them and answer nothing useful."""

    def __init__(self, hosts: tuple[str, ...]) -> None:
        self.port = free_port()
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets = []
        for host in hosts:
            sock = socket.create_server((host, self.port))
            self._sockets.append(sock)
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            conn.sendall(b'HTTP/1.1 200 OK\r\ncontent-length: 17\r\n\r\n{"secret": "yes"}')
            conn.close()

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    found = Canary(("127.0.0.1", "127.0.0.3"))
    yield found
    found.close()


@pytest.fixture(scope="module")
def guarded(platform: Platform) -> Iterator[Server]:
    """A gateway whose users' workers may only be at 127.0.0.2."""
    with platform.serve(env={"HEPAI_SERVER_WORKER_ALLOWED_NETWORKS": f"{ALLOWED}/32"}) as server:
        yield server


class Redirector(BaseHTTPRequestHandler):
    """A worker-shaped server on the allowed address that answers every call with a redirect."""

    target = ""
    hits = 0

    def do_POST(self) -> None:
        type(self).hits += 1
        self.send_response(307)
        self.send_header("location", self.target)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args: Any) -> None:
        pass


def gate(server: Server, key: str, model: str, function: str = "add") -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/worker/unified_gate/",
        params={"model": model, "function": function},
        headers={"authorization": f"Bearer {key}"},
        json={"args": [1], "kwargs": {}},
        timeout=30,
    )


def test_registrations_leading_outside_the_allowed_networks_are_refused_and_never_reached(
    platform: Platform, guarded: Server, canary: Canary, unique
) -> None:
    key = platform.create_user(unique("prober"))
    port = canary.port
    refused = {
        f"http://127.0.0.3:{port}/apiv2": 403,
        f"http://2130706435:{port}/apiv2": 403,  # 127.0.0.3 in decimal
        f"http://0x7f000003:{port}/apiv2": 403,
        f"http://0177.0.0.3:{port}/apiv2": 403,
        f"http://127.3:{port}/apiv2": 403,
        f"http://[::ffff:127.0.0.3]:{port}/apiv2": 403,
        f"http://localhost:{port}/apiv2": 403,  # a name that resolves to loopback
        f"http://169.254.169.254:{port}/latest": 403,
        f"http://0.0.0.0:{port}/apiv2": 403,
        f"http://x:y@{ALLOWED}:{port}/apiv2": 400,
        f"http://{ALLOWED}:{port}/apiv2?next=http://127.0.0.3": 400,
        f"http://{ALLOWED}:{port}/apiv2#x": 400,
        f"http://{ALLOWED}:{port}/apiv2/../admin": 400,
        f"gopher://{ALLOWED}:{port}/": 400,
    }
    names = []
    for address, status in refused.items():
        name = unique("probe/tool")
        names.append(name)
        answer = register(guarded, key, worker_info(name, unique("wk"), address=address))
        assert answer.status_code == status, (address, answer.text)
        error = answer.json()["error"]
        assert error["param"] == "network_info.worker_address", address
        assert "worker_address" in error["message"], address
    listed = httpx.get(
        f"{guarded.base_url}/worker/list_workers", headers={"authorization": f"Bearer {key}"}
    ).json()["data"]
    assert listed == [], "a refused registration stored nothing"
    for name in names:
        assert gate(guarded, key, name).status_code == 404
    assert canary.connections == 0


def test_a_redirect_from_an_allowed_worker_is_never_followed(
    platform: Platform, guarded: Server, canary: Canary, unique
) -> None:
    key = platform.create_user(unique("redirected"))
    Redirector.target = f"http://127.0.0.1:{canary.port}/apiv2/worker_unified_gate/"
    Redirector.hits = 0
    httpd = ThreadingHTTPServer((ALLOWED, free_port()), Redirector)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        name = unique("redirect/tool")
        address = f"http://{ALLOWED}:{httpd.server_port}/apiv2"
        assert (
            register(guarded, key, worker_info(name, unique("wk"), address=address)).status_code
            == 200
        )
        answer = gate(guarded, key, name)
        assert answer.status_code == 502 and "redirect" in answer.json()["error"]["message"]
        chat = httpx.post(
            f"{guarded.base_url}/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": name, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert chat.status_code == 502
        assert Redirector.hits == 2
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert canary.connections == 0


def test_a_name_repointed_after_registration_is_not_connected_to(
    platform: Platform, guarded: Server, canary: Canary, unique
) -> None:
    """The address is checked again when each connection is opened, after DNS: a worker whose
    host name now leads elsewhere (DNS rebinding) is unreachable, not reached."""
    key = platform.create_user(unique("rebinder"))
    name, worker_id = unique("rebind/tool"), unique("wk")
    address = f"http://{ALLOWED}:{free_port()}/apiv2"
    assert register(guarded, key, worker_info(name, worker_id, address=address)).status_code == 200
    engine = sa.create_engine(platform.sqlalchemy_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE workers SET address = :a WHERE id = :i"),
            {"a": f"http://localhost:{canary.port}/apiv2", "i": worker_id},
        )
    engine.dispose()
    answer = gate(guarded, key, name)
    assert answer.status_code == 503, answer.text
    assert canary.connections == 0


def test_a_worker_inside_the_allowed_network_registers_calls_streams_and_stops(
    platform: Platform, guarded: Server, unique
) -> None:
    owner = unique("inside")
    key = platform.create_user(owner)
    name = unique("inside/calculator")
    env = {"TEST_WORKER_NAME": name}
    port = free_port()
    spec = "tests/workers/ours.py:Calculator"
    with run_worker(guarded, key, spec, env=env, port=port, host=ALLOWED):
        model = guarded.hepai(key).get_remote_model(name)
        assert model.add(1, b=2) == 3
        assert list(model.count(n=3, stream=True)) == [{"i": 0}, {"i": 1}, {"i": 2}]
        worker_id = guarded.hepai(key).get_worker_info(model_name=name).id
        assert guarded.hepai(key).stop_worker(worker_id).stopped
        assert gate(guarded, key, name).status_code == 503


def test_the_builtin_workers_keep_working_when_users_are_narrowed(
    platform: Platform, operator: str, user_key: str
) -> None:
    """The built-in workers listen on loopback, outside the narrowed networks: they register
    as the platform's service account, which the allow-list does not bind."""
    env = {"HEPAI_SERVER_WORKER_ALLOWED_NETWORKS": f"{ALLOWED}/32"}
    with platform.serve("--builtin", "markitdown", env=env) as server:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            models = httpx.get(
                f"{server.base_url}/models", headers={"authorization": f"Bearer {user_key}"}
            ).json()["data"]
            if "hepai/markitdown" in {row["id"] for row in models}:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the built-in worker did not register:\n" + server.logs()[-3000:])
        tool = server.hepai(user_key).get_remote_model("hepai/markitdown")
        markdown = tool.interface(
            file_base64=base64.b64encode(documents.docx()).decode(), file_name="r.docx"
        )
        assert "# Quarterly Detector Report" in markdown
