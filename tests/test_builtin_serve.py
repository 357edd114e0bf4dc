"""`hepai-server serve --builtin NAME`: the embedded default runs the platform's own workers
beside the gateway, as a service account, and stops them with it."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

import httpx

from hepai_server.cli.builtins import builtin_worker_id
from tests import documents
from tests.stack import Platform


def worker_processes(port: int) -> list[str]:
    pattern = f"builtin:markitdown --controller http://127.0.0.1:{port}"
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return found.stdout.split()


def niceness(pid: int) -> int:
    """nice(1) of a process: field 19 of /proc/PID/stat (after the parenthesised name)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


def test_serve_starts_and_stops_builtin_workers(platform: Platform, user_key: str) -> None:
    name = "hepai/markitdown-embedded"
    env = {"HEPAI_SERVER_MARKITDOWN_MODEL_NAME": name, "HEPAI_SERVER_BUILTIN_NICENESS": "7"}
    with platform.serve("--builtin", "markitdown", env=env) as server:
        deadline = time.monotonic() + 120
        listed: set[str] = set()
        while name not in listed and time.monotonic() < deadline:
            time.sleep(0.5)
            models = httpx.get(
                f"{server.base_url}/models", headers={"authorization": f"Bearer {user_key}"}
            ).json()["data"]
            listed = {row["id"] for row in models}
        assert name in listed, "the built-in worker did not register"
        tool = server.hepai(user_key).get_remote_model(name)
        markdown = tool.interface(
            file_base64=base64.b64encode(documents.docx()).decode(), file_name="r.docx"
        )
        assert "# Quarterly Detector Report" in markdown
        port = server.port
        assert worker_processes(port)
        for pid in worker_processes(port):  # below the gateway's priority, as configured
            assert niceness(int(pid)) == niceness(server.process.pid) + 7
            # The same id on every start, so what it keeps on disk is found again.
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert builtin_worker_id("markitdown", port).encode() in command
        owner = platform.cli("key", "list", "--user", "hepai-builtin").stdout
        assert "builtin-workers" in owner and "active" in owner
    deadline = time.monotonic() + 30  # it deregisters and shuts down gracefully first
    while worker_processes(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker_processes(port) == [], "the built-in worker outlived the server"
