"""The built-in hepai/mineru tool: layout-aware PDF to markdown, by the direct call and by the
task protocol of HepAI().parse(), on PDFs made in the tests."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hepai.components.haiddf.hclient._exceptions import HAPIStatusError
from PIL import Image

from tests import documents
from tests.stack import Platform, Server, run_worker

MODEL = "hepai/mineru"


@pytest.fixture(scope="module")
def mineru(server: Server, operator: str) -> Iterator[str]:
    with run_worker(server, operator, "builtin:mineru", timeout=120):
        yield MODEL


@pytest.fixture
def tool(server: Server, mineru: str, user_key: str) -> Any:
    return server.hepai(user_key).get_remote_model(mineru)


def convert(tool: Any, data: bytes, name: str = "paper.pdf") -> str:
    return str(tool.interface(file_base64=base64.b64encode(data).decode(), file_name=name))


def test_two_columns_are_read_in_order_with_headings(tool: Any) -> None:
    markdown = convert(tool, documents.two_column_pdf())
    assert "# Muon Lifetime Measurement" in markdown
    assert "## Method Section" in markdown and "## Results Section" in markdown
    # The left column, top to bottom, then the right one: never interleaved line by line.
    order = [markdown.index(f"LEFTPARA{i}") for i in (1, 2, 3)]
    order += [markdown.index(f"RIGHTPARA{i}") for i in (1, 2, 3)]
    assert order == sorted(order)


def test_tables_and_formulas_are_kept(tool: Any) -> None:
    markdown = convert(tool, documents.table_formula_pdf())
    assert "| Detector | Channels | Rate |" in markdown
    assert "| Calorimeter | 4800 | 10 MHz |" in markdown
    assert "E = mc<sup>2</sup>" in markdown
    formula = markdown[markdown.index("$$") :]
    assert "∑" in formula and "∫" in formula and "\u03b1" in formula  # alpha


def test_a_scanned_pdf_is_read_by_ocr(tool: Any) -> None:
    markdown = convert(tool, documents.scanned_pdf(["Beam current 42 mA", "Shift leader on duty"]))
    assert "Beam current 42 mA" in markdown and "Shift leader on duty" in markdown


def test_figures_come_back_inline_from_the_direct_call(tool: Any) -> None:
    markdown = convert(tool, documents.figure_pdf())
    assert "Detector Layout" in markdown and "Figure 1: the detector cross-section." in markdown
    found = re.search(r"!\[[^\]]*\]\(data:image/(\w+);base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert found, markdown[:500]
    figure = Image.open(io.BytesIO(base64.b64decode(found.group(2))))
    assert figure.size[0] > 100 and figure.size[1] > 100
    assert "images/" not in markdown  # no link left pointing nowhere


def test_a_tasks_figures_are_files_the_markdown_links_by_preview_url(
    server: Server, mineru: str, user_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEPAI_UPLOAD_STATE_PATH", str(tmp_path / "uploads.json"))
    monkeypatch.setenv("HEPAI_TASK_STATE_PATH", str(tmp_path / "tasks.json"))
    path = tmp_path / "layout.pdf"
    path.write_bytes(documents.figure_pdf())
    client = server.hepai(user_key)
    result = client.parse(str(path), model=mineru, poll_interval=0.3, timeout=120)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", result.markdown or "")
    assert len(links) == 1 and links[0].endswith("/preview"), result.markdown
    shown = httpx.get(links[0])  # a web page can show it: no key needed
    assert shown.status_code == 200 and shown.headers["content-type"].startswith("image/")
    (image,) = [a for a in result.artifacts if a.type == "image"]
    assert image.file_id and image.filename.startswith("layout-")
    assert image.metadata["bytes"] == len(shown.content)
    written = result.download_to(tmp_path / "out")
    assert (written / image.filename).read_bytes() == shown.content


def test_parse_runs_the_task_protocol(
    server: Server, mineru: str, user_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEPAI_UPLOAD_STATE_PATH", str(tmp_path / "uploads.json"))
    monkeypatch.setenv("HEPAI_TASK_STATE_PATH", str(tmp_path / "tasks.json"))
    path = tmp_path / "paper.pdf"
    path.write_bytes(documents.two_column_pdf())
    client = server.hepai(user_key)
    result = client.parse(str(path), model=mineru, poll_interval=0.3, timeout=120)
    assert "## Results Section" in (result.markdown or "")
    assert result.metadata["pages"] == 1
    task = client.tasks.get(result.task_id, model=mineru)
    assert task.status == "succeeded" and task.progress == 1.0
    assert task.metadata["pages"] == {"done": 1, "total": 1}
    # The markdown is also stored as a file of the caller: the task's artifact.
    artifact = result.artifacts[0]
    assert artifact.filename == "paper.md" and artifact.file_id
    stored = server.openai(user_key).files.content(artifact.file_id).content.decode()
    assert stored == result.markdown
    written = result.download_to(tmp_path / "out")
    assert (written / "paper.md").read_text() == result.markdown


def test_tasks_belong_to_their_submitter(
    platform: Platform,
    server: Server,
    mineru: str,
    user_key: str,
    unique: Callable[[str], str],
) -> None:
    file_id = (
        server.openai(user_key)
        .files.create(file=("paper.pdf", documents.two_column_pdf()), purpose="user_data")
        .id
    )
    mine = server.hepai(user_key).get_remote_model(mineru)
    task = mine.submit(file_id=file_id, idempotency_key="same-paper")
    again = mine.submit(file_id=file_id, idempotency_key="same-paper")
    assert again["id"] == task["id"]
    other = server.hepai(platform.create_user(unique("other"))).get_remote_model(mineru)
    for call in (other.status, other.result, other.cancel):
        with pytest.raises(HAPIStatusError) as refused:
            call(task["id"])
        assert refused.value.status_code == 404
    with pytest.raises(HAPIStatusError) as unknown:
        mine.status("task-does-not-exist")
    assert unknown.value.status_code == 404


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (documents.docx(), "report.docx"),
        (documents.encrypted_pdf(), "locked.pdf"),
        (b"", "empty.pdf"),
        (b"%PDF-1.7 truncated", "broken.pdf"),
    ],
)
def test_bad_inputs_are_400(tool: Any, data: bytes, name: str) -> None:
    with pytest.raises(HAPIStatusError) as refused:
        convert(tool, data, name)
    assert refused.value.status_code == 400
