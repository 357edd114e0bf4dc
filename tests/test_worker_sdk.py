"""Our worker SDK (hepai_server.worker): served by the CLI, called by the real hepai client."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
from hepai.components.haiddf.hclient._exceptions import HAPIStatusError

from tests.stack import Platform, Server, our_worker


def model_ids(server: Server, key: str) -> set[str]:
    response = httpx.get(server.base_url + "/models", headers={"x-api-key": key})
    return {row["id"] for row in response.json()["data"]}


def test_hepai_client_calls_our_worker(platform: Platform, server: Server, unique) -> None:
    owner = unique("sdk-owner")
    key = platform.create_user(owner)
    name = f"{owner}/calculator"
    with our_worker(server, key, name, "groups: all"):
        model = server.hepai(key).get_remote_model(name)
        assert model.add(1, b=5) == 6
        half = model.half(3)
        assert half == 1.5 and isinstance(half, float)
        assert model.upto(3) == [0, 1, 2]
        assert model.describe() == {"name": name, "nested": {"ok": True}}
        assert model.nothing() is None
        assert list(model.count(n=3, stream=True)) == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert list(model.acount(n=2, stream=True)) == [
            {"i": 0, "async": True},
            {"i": 1, "async": True},
        ]
        identity = model.whoami()
        assert identity["username"] == owner and identity["request_id"].startswith("req-")
        functions = {row["__name__"]: row for row in model.get_register_functions()}
        assert "private" not in functions and "__call__" not in functions
        assert functions["add"]["__doc__"] == "Add two numbers."
        assert functions["add"]["__signature__"] == [
            {"name": "a", "type": "int", "default": None},
            {"name": "b", "type": "int", "default": 2},
        ]
        other = server.hepai(platform.create_user(unique("sdk-other")))
        assert other.get_remote_model(name).add(2, 2) == 4, "groups: all shares it"


ERRORS = [
    ("fail", {"args": ["boom"]}, 400, "ValueError: boom"),
    ("later", {}, 501, "NotImplementedError: not yet"),
    ("add", {"kwargs": {"c": 1}}, 500, "TypeError"),
    ("private", {}, 405, "not remote callable"),
    ("missing", {}, 404, "not remote callable"),
]


def test_errors_map_to_statuses(platform: Platform, server: Server, unique) -> None:
    owner = unique("sdk-errors")
    key = platform.create_user(owner)
    name = f"{owner}/calculator"
    with our_worker(server, key, name):
        for function, payload, status, detail in ERRORS:
            response = httpx.post(
                server.base_url + "/worker/unified_gate/",
                params={"model": name, "function": function},
                headers={"x-api-key": key},
                json=payload,
            )
            assert response.status_code == status, function
            assert detail in response.json()["detail"], function
        with pytest.raises(HAPIStatusError) as caught:
            server.hepai(key).get_remote_model(name).fail("raised")
        assert caught.value.status_code == 400


def test_heartbeats_keep_it_listed_and_exit_deregisters(platform: Platform, unique) -> None:
    owner = unique("sdk-beat")
    key = platform.create_user(owner)
    name = f"{owner}/calculator"
    with platform.serve(env={"HEPAI_SERVER_WORKER_EXPIRY_SECONDS": "1.5"}) as server:
        with our_worker(server, key, name, heartbeat=0.3) as process:
            time.sleep(2.5)  # beyond the expiry: only heartbeats keep it listed
            assert name in model_ids(server, key)
            process.send_signal(signal.SIGTERM)
            process.wait(15)
        assert name not in model_ids(server, key), "a clean exit deregisters at once"


def without_key_but_importable() -> dict[str, str]:
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def test_missing_key_refuses_to_start(platform: Platform, server: Server) -> None:
    import subprocess

    from tests.stack import BIN

    result = subprocess.run(
        [
            str(BIN / "hepai-server"),
            "worker",
            "run",
            "tests/workers/ours.py:Calculator",
            "--controller",
            server.url,
        ],
        # No HEPAI_API_KEY; PYTHONPATH kept for a checkout whose venv does not install it.
        env={"PATH": "/usr/bin:/bin", **without_key_but_importable()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "HEPAI_API_KEY" in result.stderr
