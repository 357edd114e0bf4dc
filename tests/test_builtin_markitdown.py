"""The built-in hepai/markitdown tool, run for real and called through the gateway with the
hepai client, on documents made in the tests; bad files get clear errors and a live worker."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from hepai.components.haiddf.hclient._exceptions import HAPIStatusError

from tests import documents
from tests.stack import Platform, Server, run_worker

MODEL = "hepai/markitdown"


@pytest.fixture(scope="module")
def markitdown(server: Server, operator: str) -> Iterator[Any]:
    with run_worker(server, operator, "builtin:markitdown", timeout=120):
        yield MODEL


@pytest.fixture
def tool(server: Server, markitdown: str, user_key: str) -> Any:
    return server.hepai(user_key).get_remote_model(markitdown)


def convert(tool: Any, data: bytes, name: str, **options: Any) -> str:
    return str(
        tool.interface(file_base64=base64.b64encode(data).decode(), file_name=name, **options)
    )


def test_docx_keeps_headings_and_table(tool: Any) -> None:
    markdown = convert(tool, documents.docx(), "report.docx")
    assert "# Quarterly Detector Report" in markdown
    assert "## Calibration Results" in markdown
    assert "| ECAL-1 | 1.02 | good |" in markdown
    assert "| HCAL-7 | 0.97 | noisy |" in markdown


def test_pptx_xlsx_and_html(tool: Any) -> None:
    slides = convert(tool, documents.pptx(), "talk.pptx")
    assert "# Beamline Upgrade" in slides and "Faster trigger" in slides
    assert slides.index("Beamline Upgrade") < slides.index("Schedule")
    sheet = convert(tool, documents.xlsx(), "runs.xlsx")
    assert "## Runs" in sheet and "| 1202 | 61000 | 13.6 TeV |" in sheet
    page = convert(tool, documents.HTML, "notes.html")
    assert "# Shift Notes" in page and "| 02:00 | Magnet quench |" in page


def test_text_pdf_and_convert_metadata(tool: Any) -> None:
    pdf = documents.text_pdf(["Neutrino oscillation results", "Second line of the summary"])
    result = tool.convert(file_base64=base64.b64encode(pdf).decode(), file_name="summary.pdf")
    assert "Neutrino oscillation results" in result["markdown"]
    assert result["metadata"]["pages"] == 1 and result["metadata"]["format"] == "pdf"
    assert result["metadata"]["bytes"] == len(pdf) and result["metadata"]["seconds"] > 0


def test_images_and_scans_are_read_by_ocr(tool: Any) -> None:
    lines = ["Beam current 42 mA", "Vacuum pressure nominal"]
    screenshot = convert(tool, documents.text_image(lines), "screen.png")
    assert "Beam current 42 mA" in screenshot and "Vacuum pressure nominal" in screenshot
    scan = convert(tool, documents.scanned_pdf(lines), "scan.pdf")
    assert "Beam current 42 mA" in scan
    chinese = convert(
        tool,
        documents.text_image(["高能物理研究所", "加速器运行正常"], font=documents.CJK_FONT),
        "notice.png",
    )
    assert "高能物理研究所" in chinese.replace(" ", "")


def test_file_id_is_read_as_the_caller(server: Server, tool: Any, user_key: str) -> None:
    file_id = (
        server.openai(user_key)
        .files.create(file=("report.docx", documents.docx()), purpose="user_data")
        .id
    )
    markdown = tool.interface(file_id=file_id, file_name="report.docx")
    assert "# Quarterly Detector Report" in markdown


def bad_inputs(tmp_path: Path) -> list[tuple[str, bytes, str, int]]:
    """(case, bytes, name, expected status)."""
    return [
        ("corrupt pdf", b"%PDF-1.7\n" + bytes(range(256)) * 40, "broken.pdf", 400),
        ("password pdf", documents.encrypted_pdf(), "locked.pdf", 400),
        ("zip bomb", documents.zip_bomb_docx(tmp_path / "bomb.docx"), "bomb.docx", 400),
        ("empty", b"", "empty.docx", 400),
        ("wrong suffix", documents.docx(), "actually-a-docx.pdf", 400),
        ("unknown format", b"\x00\x01binary", "data.bin", 400),
    ]


def test_bad_files_get_clear_errors_and_the_worker_lives(tool: Any, tmp_path: Path) -> None:
    for case, data, name, status in bad_inputs(tmp_path):
        started = time.monotonic()
        with pytest.raises(HAPIStatusError) as refused:
            convert(tool, data, name)
        assert refused.value.status_code == status, (case, refused.value)
        assert time.monotonic() - started < 30, case
        assert name.split(".")[0] in str(refused.value) or case == "unknown format", (
            case,
            str(refused.value),
        )
    assert "# Quarterly Detector Report" in convert(tool, documents.docx(), "after.docx")


def test_a_missing_document_is_400(tool: Any) -> None:
    with pytest.raises(HAPIStatusError) as refused:
        tool.interface(file_name="x.pdf")
    assert refused.value.status_code == 400
    with pytest.raises(HAPIStatusError) as not_base64:
        tool.interface(file_base64="not base64!", file_name="x.pdf")
    assert not_base64.value.status_code == 400


def test_calls_beyond_the_concurrency_wait_their_turn(tool: Any) -> None:
    data = documents.docx()
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: convert(tool, data, f"copy-{i}.docx"), range(6)))
    assert all("# Quarterly Detector Report" in markdown for markdown in results)


def test_limits_come_from_settings(
    platform: Platform, server: Server, operator: str, user_key: str
) -> None:
    env = {
        "HEPAI_SERVER_MARKITDOWN_MODEL_NAME": "hepai/markitdown-small",
        "HEPAI_SERVER_TOOL_MAX_BYTES": "2000",
        "HEPAI_SERVER_TOOL_TIMEOUT_SECONDS": "0.01",
    }
    with run_worker(server, operator, "builtin:markitdown", env=env, timeout=120):
        small = server.hepai(user_key).get_remote_model("hepai/markitdown-small")
        with pytest.raises(HAPIStatusError) as too_large:
            convert(small, documents.docx(), "big.docx")
        assert too_large.value.status_code == 413
        with pytest.raises(HAPIStatusError) as too_slow:
            convert(small, documents.HTML, "slow.html")
        assert too_slow.value.status_code == 504


def test_each_call_is_metered_in_pages_and_bytes(
    server: Server, platform: Platform, markitdown: str, user_key: str, unique: Any
) -> None:
    pdf = documents.text_pdf(["Metered page"])
    request_id = unique("metered").replace("_", "-")
    response = httpx.post(
        f"{server.base_url}/worker/unified_gate/",
        params={"model": markitdown, "function": "interface"},
        headers={"authorization": f"Bearer {user_key}", "x-request-id": request_id},
        json={"kwargs": {"file_base64": base64.b64encode(pdf).decode(), "file_name": "m.pdf"}},
        timeout=120,
    )
    assert response.status_code == 200 and "Metered page" in response.json()
    row = platform.usage_row(request_id)
    assert (row["model"], row["endpoint"], row["status_code"]) == (
        markitdown,
        "worker.interface",
        200,
    )
    assert (row["pages"], row["bytes"]) == (1, len(pdf))
