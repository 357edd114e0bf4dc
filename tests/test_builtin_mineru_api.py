"""hepai/mineru on its GPU engine: MinerU itself (2.x, its real `mineru-api` server from its own
environment) behind the worker, through the real gateway and hepai client.

Only the vision-language model is stood in for (this machine has no GPU and no weights):
MinerU's vlm-http-client backend asks the Tesseract-backed stand-in
(hepai_server.testing.mock_mineru_vlm) for each page's layout and each block's text, and does
everything else itself: rendering, cropping, ordering, markdown.
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hepai.components.haiddf.hclient._exceptions import HAPIStatusError
from pypdf import PdfReader, PdfWriter

from tests import documents
from tests.stack import Server, finished, follow, free_port, run_worker, stop, wait_until_up

MINERU_API = Path(__file__).parent.parent / ".venv-mineru" / "bin" / "mineru-api"
MODEL = "hepai/mineru-gpu"


@pytest.fixture(scope="module")
def vlm() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hepai_server.testing.mock_mineru_vlm", "--port", str(port)]
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture(scope="module")
def mineru_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert MINERU_API.exists(), "scripts/setup.sh installs MinerU in .venv-mineru"
    port = free_port()
    process = subprocess.Popen(
        [str(MINERU_API), "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path_factory.mktemp("mineru"),
        env={"PATH": "/usr/bin:/bin", "MINERU_MODEL_SOURCE": "local", "HF_HUB_OFFLINE": "1"},
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/openapi.json", process, timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def engine_env(api_url: str, vlm_url: str) -> dict[str, str]:
    return {
        "HEPAI_SERVER_MINERU_ENGINE": "mineru-api",
        "HEPAI_SERVER_MINERU_API_URL": api_url,
        "HEPAI_SERVER_MINERU_BACKEND": "vlm-http-client",
        "HEPAI_SERVER_MINERU_VLM_URL": vlm_url,
        "HEPAI_SERVER_MINERU_MODEL_NAME": MODEL,
    }


@pytest.fixture(scope="module")
def gpu_mineru(server: Server, operator: str, mineru_api: str, vlm: str) -> Iterator[str]:
    with run_worker(server, operator, "builtin:mineru", env=engine_env(mineru_api, vlm)):
        yield MODEL


def numbered_pages(count: int) -> bytes:
    writer = PdfWriter()
    for number in range(1, count + 1):
        page = documents.text_pdf([f"Beamline logbook page {number}"])
        writer.append(PdfReader(io.BytesIO(page)))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_mineru_reads_a_two_column_paper(
    server: Server, gpu_mineru: str, user_key: str, vlm: str
) -> None:
    tool = server.hepai(user_key).get_remote_model(gpu_mineru)
    data = base64.b64encode(documents.two_column_pdf()).decode()
    markdown = str(tool.interface(file_base64=data, file_name="paper.pdf"))
    assert "# Muon Lifetime Measurement" in markdown
    # Each column top to bottom, the left one first: MinerU's reading order.
    assert markdown.index("records muon decays") < markdown.index("fitted lifetime")
    asked = httpx.get(f"{vlm}/_mock/requests").json()
    assert "Layout Detection:" in asked and "Text Recognition:" in asked


def test_a_task_through_mineru_reports_each_window_and_keeps_page_order(
    server: Server, gpu_mineru: str, user_key: str, tmp_path: Path
) -> None:
    client = server.hepai(user_key)
    tool = client.get_remote_model(gpu_mineru)
    file_id = client.files.create(file=("logbook.pdf", numbered_pages(9)), purpose="user_data").id
    task = tool.submit(file_id=file_id)
    seen = follow(tool, task["id"], until=finished)
    assert seen[-1]["status"] == "succeeded", seen[-1]
    done = [status["pages"]["done"] for status in seen]
    assert done == sorted(done) and done[-1] == 9 and seen[-1]["pages"]["total"] == 9
    assert 8 in done, done  # the first window of 8 pages came back before the last page
    markdown = tool.result(task["id"])["markdown"]
    places = [markdown.index(f"logbook page {number}") for number in range(1, 10)]
    assert places == sorted(places)


def test_mineru_out_of_reach_is_a_clear_503(
    server: Server, operator: str, user_key: str, vlm: str
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = {**engine_env(closed, vlm), "HEPAI_SERVER_MINERU_MODEL_NAME": "hepai/mineru-down"}
    with run_worker(server, operator, "builtin:mineru", env=env):
        tool = server.hepai(user_key).get_remote_model("hepai/mineru-down")
        data = base64.b64encode(documents.two_column_pdf()).decode()
        with pytest.raises(HAPIStatusError) as refused:
            tool.interface(file_base64=data, file_name="paper.pdf")
    assert refused.value.status_code == 503
    assert "MinerU cannot be reached" in str(refused.value.body)
