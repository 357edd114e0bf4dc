"""scripts/quickstart.sh: a newcomer's first run serves the demo models and the platform's own
tools, so the user guide's examples answer offline."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hepai import HepAI

from tests.stack import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_serves_the_demo_models_and_markitdown(tmp_path: Path) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("HEPAI_SERVER_")}
    env.pop("HEPAI_API_KEY", None)
    env.update(
        HEPAI_SERVER_DATA_DIR=str(tmp_path / "data"),
        PORT=str(port),
        DEMO_UPSTREAM_PORT=str(free_port()),
        QUICKSTART_SKIP_SETUP="1",
        # One tool keeps the test short; the default serves all four the same way.
        QUICKSTART_BUILTINS="markitdown",
    )
    log = tmp_path / "quickstart.log"
    with log.open("wb") as sink:
        script = subprocess.Popen(
            ["bash", "scripts/quickstart.sh"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}/apiv2"
    try:
        key = wait_for_key(log, script)
        client = HepAI(base_url=base, api_key=key)
        models = wait_for_models(client, {"demo/mock-chat", "hepai/markitdown"})
        assert {"demo/mock-chat", "demo/mock-embedding", "hepai/markitdown"} <= models
        chat = client.chat.completions.create(
            model="demo/mock-chat", messages=[{"role": "user", "content": "Hello"}]
        )
        assert chat.choices[0].message.content
        document = tmp_path / "notes.md"
        document.write_text("# Notes\n\nThe detector is calibrated.\n")
        markdown = client.get_remote_model("hepai/markitdown").interface(
            file_name=document.name, file_base64=encode(document)
        )
        assert "The detector is calibrated." in str(markdown)
        assert "loaded in" in log.read_text()  # the tool's progress line
        client.close()
    finally:
        os.killpg(script.pid, signal.SIGTERM)
        script.wait(60)


def encode(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def wait_for_key(log: Path, script: subprocess.Popen[bytes], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"API key:\s+(sk-\S+)", log.read_text(errors="replace"))
        if found:
            return found.group(1)
        assert script.poll() is None, log.read_text()
        time.sleep(0.2)
    raise AssertionError(log.read_text())


def wait_for_models(client: HepAI, wanted: set[str], timeout: float = 180) -> set[str]:
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            seen = {model.id for model in client.models.list()}
        except Exception:  # not up yet
            seen = set()
        if wanted <= seen:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"only {seen} after {timeout} s")
