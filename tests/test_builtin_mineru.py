"""The built-in hepai/mineru tool: layout-aware PDF to markdown, by the direct call and by the
task protocol of HepAI().parse(), on PDFs made in the tests."""

from __future__ import annotations

import base64
import contextlib
import io
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hepai.components.haiddf.hclient._exceptions import HAPIStatusError
from PIL import Image
from pypdf import PdfReader, PdfWriter

from tests import documents
from tests.stack import Platform, Server, finished, follow, free_port, run_worker

MODEL = "hepai/mineru"


@pytest.fixture(scope="module")
def mineru_worker(server: Server, operator: str) -> Iterator[subprocess.Popen[bytes]]:
    with run_worker(server, operator, "builtin:mineru", timeout=120) as process:
        yield process


@pytest.fixture(scope="module")
def mineru(mineru_worker: subprocess.Popen[bytes]) -> str:
    return MODEL


@pytest.fixture
def tool(server: Server, mineru: str, user_key: str) -> Any:
    return server.hepai(user_key).get_remote_model(mineru)


def convert(tool: Any, data: bytes, name: str = "paper.pdf") -> str:
    return str(tool.interface(file_base64=base64.b64encode(data).decode(), file_name=name))


def scanned_pages(count: int) -> bytes:
    """A PDF of ``count`` scanned pages, "Scan page N" on page N: OCR makes each slow."""
    writer = PdfWriter()
    for number in range(1, count + 1):
        writer.append(PdfReader(io.BytesIO(documents.scanned_pdf([f"Scan page {number}"]))))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def upload(server: Server, key: str, data: bytes, name: str = "paper.pdf") -> str:
    return server.openai(key).files.create(file=(name, data), purpose="user_data").id


def children(pid: int) -> list[str]:
    found = []
    for thread in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            found += (thread / "children").read_text().split()
    return found


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


def test_a_tasks_progress_moves_page_by_page(server: Server, tool: Any, user_key: str) -> None:
    task = tool.submit(file_id=upload(server, user_key, scanned_pages(3)))
    seen = follow(tool, task["id"], until=finished)
    assert seen[-1]["status"] == "succeeded", seen[-1]
    done = [status["pages"]["done"] for status in seen]
    assert done == sorted(done) and done[-1] == 3
    assert {1, 2} & set(done), done  # seen between pages, not only at the end
    assert seen[-1]["progress"] == 1.0
    markdown = tool.result(task["id"])["markdown"]
    assert [markdown.index(f"Scan page {n}") for n in (1, 2, 3)] == sorted(
        markdown.index(f"Scan page {n}") for n in (1, 2, 3)
    )


def test_cancelling_a_task_kills_its_conversion(
    server: Server, tool: Any, user_key: str, mineru_worker: subprocess.Popen[bytes]
) -> None:
    task = tool.submit(file_id=upload(server, user_key, scanned_pages(12)))
    follow(tool, task["id"], until=lambda status: status["pages"]["done"] >= 1)
    assert children(mineru_worker.pid), "the conversion runs in a child"
    assert tool.cancel(task["id"])["status"] == "cancelled"
    deadline = time.monotonic() + 10
    while children(mineru_worker.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not children(mineru_worker.pid), "the conversion outlived its task"
    after = tool.status(task["id"])
    assert after["status"] == "cancelled" and after["pages"]["done"] < 12


def test_tasks_outlive_a_restart_of_their_worker(
    server: Server, operator: str, user_key: str, tmp_path: Path
) -> None:
    """One worker, killed and started again on the same port and task directory (so the same
    worker id): its finished task still answers; the one it was converting reports why not."""
    name = "hepai/mineru-restart"
    env = {"HEPAI_SERVER_TASK_DIR": str(tmp_path), "HEPAI_SERVER_MINERU_MODEL_NAME": name}
    port = free_port()
    with run_worker(server, operator, "builtin:mineru", env=env, port=port, timeout=120) as one:
        tool = server.hepai(user_key).get_remote_model(name)
        done = tool.submit(file_id=upload(server, user_key, documents.two_column_pdf()))
        follow(tool, done["id"], until=finished)
        running = tool.submit(file_id=upload(server, user_key, scanned_pages(12)))
        follow(tool, running["id"], until=lambda status: status["pages"]["done"] >= 1)
        one.kill()  # a crash: nothing is written on the way out
        one.wait()
    with run_worker(server, operator, "builtin:mineru", env=env, port=port, timeout=120):
        tool = server.hepai(user_key).get_remote_model(name)
        assert tool.status(done["id"])["status"] == "succeeded"
        assert "## Results Section" in tool.result(done["id"])["markdown"]
        interrupted = tool.status(running["id"])
        assert interrupted["status"] == "failed"
        assert "restarted" in interrupted["error"]["message"]


def test_each_worker_answers_for_its_own_tasks(
    server: Server, mineru: str, operator: str, user_key: str
) -> None:
    """Two workers of one model: lookups find a task on whichever worker holds it."""
    with run_worker(server, operator, "builtin:mineru", timeout=120):
        tool = server.hepai(user_key).get_remote_model(mineru)
        paper = upload(server, user_key, documents.two_column_pdf())
        tasks = [tool.submit(file_id=paper)["id"] for _ in range(4)]
        for task_id in tasks:  # each lookup is spread over the two workers
            assert follow(tool, task_id, until=finished)[-1]["status"] == "succeeded"
            assert "## Results Section" in tool.result(task_id)["markdown"]
        with pytest.raises(HAPIStatusError) as unknown:
            tool.status("task-on-no-worker")
        assert unknown.value.status_code == 404
        # A submit retried with its idempotency key reaches the worker that holds its task.
        again = {tool.submit(file_id=paper, idempotency_key="retried")["id"] for _ in range(6)}
        assert len(again) == 1, again


def test_long_tasks_do_not_hold_up_a_direct_call(server: Server, tool: Any, user_key: str) -> None:
    """Two long tasks take both of the tasks' conversions; a direct call has its own."""
    tasks = [tool.submit(file_id=upload(server, user_key, scanned_pages(12)))["id"] for _ in "ab"]
    for task_id in tasks:
        follow(tool, task_id, until=lambda status: status["pages"]["done"] >= 1)
    markdown = convert(tool, documents.two_column_pdf())
    assert "## Results Section" in markdown
    assert all(not finished(tool.status(task_id)) for task_id in tasks), "the tasks ran out"
    for task_id in tasks:
        assert tool.cancel(task_id)["status"] == "cancelled"
