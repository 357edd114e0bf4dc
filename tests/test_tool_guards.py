"""The guards in front of the document tools: checks on the bytes, and conversions isolated in
a child with a memory cap and a deadline."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader, PdfWriter

from hepai_server.worker.builtin.documents import (
    BadDocument,
    DocumentTooLarge,
    check_document,
)
from hepai_server.worker.builtin.isolation import (
    ConversionFailed,
    ConversionStopped,
    run_isolated,
)
from hepai_server.worker.model import TooLarge
from tests import documents

LIMITS = {"max_bytes": 10 * 1024 * 1024, "max_pages": 5}


def test_good_documents_pass_and_keep_their_format() -> None:
    assert check_document(documents.docx(), name="a.docx", suffix=None, **LIMITS).suffix == "docx"
    pdf = documents.text_pdf(["x"])
    assert check_document(pdf, name=None, suffix=".PDF", **LIMITS).name == "document.pdf"


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"", "e.pdf", "is empty"),
        (b"%PDF-1.4 garbage", "g.pdf", "damaged"),
        (b"plain words", "x.exe", "cannot convert .exe"),
        (b"PK\x03\x04 not really", "z.docx", "damaged"),
        (b"%PDF-1.4", "p.docx", "content is PDF"),
        (b"GIF89a", "pic.png", "content is GIF"),
        (b"no magic at all", "pic.png", "not a PNG image"),
        (b"words", None, "give the file's name or suffix"),
    ],
)
def test_bad_documents_are_refused(data: bytes, name: str | None, message: str) -> None:
    with pytest.raises(BadDocument, match=message):
        check_document(data, name=name, suffix=None, **LIMITS)


def test_password_and_zip_bomb_and_limits(tmp_path: Path) -> None:
    with pytest.raises(BadDocument, match="password"):
        check_document(documents.encrypted_pdf(), name="l.pdf", suffix=None, **LIMITS)
    started = time.monotonic()
    bomb = documents.zip_bomb_docx(tmp_path / "bomb.docx")
    with pytest.raises(BadDocument, match="zip bomb"):
        check_document(bomb, name="bomb.docx", suffix=None, **LIMITS)
    assert time.monotonic() - started < 30
    with pytest.raises(DocumentTooLarge):
        check_document(documents.docx(), name="d.docx", suffix=None, max_bytes=100, max_pages=5)
    one_page = documents.text_pdf(["page"])
    writer = PdfWriter()
    for _ in range(6):
        writer.append(PdfReader(io.BytesIO(one_page)))
    out = tmp_path / "six.pdf"
    writer.write(out)
    with pytest.raises(DocumentTooLarge, match="6 pages"):
        check_document(out.read_bytes(), name="six.pdf", suffix=None, **LIMITS)


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * 1024 * 1024))


def refuse() -> None:
    raise DocumentTooLarge("too big")


def test_isolation_caps_memory_and_time_and_passes_errors() -> None:
    assert run_isolated(allocate, 10, timeout=30, memory_bytes=256 * 1024 * 1024) == 10 * 2**20
    with pytest.raises(ConversionFailed, match="more memory"):
        run_isolated(allocate, 1024, timeout=30, memory_bytes=256 * 1024 * 1024)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        run_isolated(time.sleep, 30, timeout=0.5, memory_bytes=256 * 1024 * 1024)
    assert time.monotonic() - started < 5
    with pytest.raises(TooLarge, match="too big"):
        run_isolated(refuse, timeout=30, memory_bytes=256 * 1024 * 1024)
    with pytest.raises(ValueError, match="invalid literal"):
        run_isolated(int, "seven", timeout=30, memory_bytes=256 * 1024 * 1024)


def tick(emit: Callable[[Any], None], count: int, pause: float, pid_file: str) -> str:
    Path(pid_file).write_text(str(os.getpid()))
    for item in range(count):
        time.sleep(pause)
        emit(item)
    return "done"


def test_a_reporting_child_hands_over_items_and_its_deadline_runs_from_the_last(
    tmp_path: Path,
) -> None:
    seen: list[int] = []
    pid_file = str(tmp_path / "pid")
    # 1.8 s in all, but never 1 s without an item: the deadline is per item.
    assert (
        run_isolated(tick, 6, 0.3, pid_file, timeout=1, memory_bytes=1 << 28, on_item=seen.append)
        == "done"
    )
    assert seen == list(range(6))
    with pytest.raises(TimeoutError):
        run_isolated(tick, 2, 2, pid_file, timeout=0.5, memory_bytes=1 << 28, on_item=seen.append)


def test_stopping_a_conversion_kills_its_child(tmp_path: Path) -> None:
    stop = threading.Event()
    seen: list[int] = []

    def arrived(item: int) -> None:
        seen.append(item)
        if item == 2:
            stop.set()

    pid_file = tmp_path / "pid"
    with pytest.raises(ConversionStopped):
        run_isolated(
            tick, 1000, 0.05, str(pid_file), timeout=5, memory_bytes=1 << 28,
            on_item=arrived, stop=stop,
        )  # fmt: skip
    assert 2 <= seen[-1] < 20
    assert not Path(f"/proc/{pid_file.read_text()}").exists()  # killed and reaped


def open_sockets() -> list[str]:
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    return [link for link in links if link.startswith("socket:")]


def test_a_conversion_holds_none_of_the_workers_sockets() -> None:
    """A listening socket left open in a child would keep a crashed worker's port bound."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        assert open_sockets(), "the test itself holds a socket"
        held = run_isolated(open_sockets, timeout=30, memory_bytes=1 << 28)
        assert held == [], f"the child kept {held} (listening: {listening.fileno()})"
