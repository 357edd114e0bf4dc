"""File limits on their own servers: quotas (413, nothing left behind), the per-file size,
retention and the expiry of abandoned uploads, a 150 MB resumable upload with bounded memory,
and the admin CLI."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.stack import Platform, Server
from tests.test_files import auth, spooled, stored_objects

KiB, MiB = 1024, 1024 * 1024


@pytest.fixture(scope="module")
def limited(platform: Platform) -> Iterator[Server]:
    """A server with a 1 MiB quota per user and files of at most 600 KiB."""
    env = {
        "HEPAI_SERVER_USER_STORAGE_QUOTA_BYTES": str(1 * MiB),
        "HEPAI_SERVER_FILE_MAX_BYTES": str(600 * KiB),
    }
    with platform.serve(env=env) as running:
        yield running


def assert_413(response: httpx.Response, code: str) -> None:
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == code


@pytest.mark.both_databases
def test_quota_exceeded_is_413_and_leaves_nothing(
    limited: Server, platform: Platform, unique: Callable[[str], str]
) -> None:
    key = platform.create_user(unique("quota"))
    client = limited.openai(key)
    client.files.create(file=("a.bin", os.urandom(500 * KiB)), purpose="user_data")
    objects = set(stored_objects(platform.data_dir))

    with pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("b.bin", os.urandom(550 * KiB)), purpose="user_data")
    assert refused.value.status_code == 413
    assert refused.value.body["code"] == "storage_quota_exceeded"  # type: ignore[index]

    def chunked() -> Iterator[bytes]:  # no Content-Length: refused while it streams
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="c"\r\n\r\n'
        for _ in range(40):
            yield os.urandom(16 * KiB)
        yield b"\r\n--b--\r\n"

    streamed = httpx.post(
        f"{limited.base_url}/files",
        headers=auth(key) | {"content-type": "multipart/form-data; boundary=b"},
        content=chunked(),
    )
    assert_413(streamed, "storage_quota_exceeded")
    assert [f.filename for f in client.files.list()] == ["a.bin"]
    assert set(stored_objects(platform.data_dir)) == objects
    assert spooled(platform.data_dir) == []

    # Resumable: refused at the declaration, and a part past the quota leaves nothing either.
    with pytest.raises(openai.APIStatusError) as declared:
        client.uploads.create(
            bytes=600 * KiB, filename="d.bin", mime_type="x/y", purpose="user_data"
        )
    assert declared.value.status_code == 413
    upload = client.uploads.create(
        bytes=500 * KiB, filename="e.bin", mime_type="x/y", purpose="user_data"
    )
    client.uploads.parts.create(upload.id, data=os.urandom(300 * KiB))
    with pytest.raises(openai.APIStatusError) as part:
        client.uploads.parts.create(upload.id, data=os.urandom(300 * KiB))
    assert part.value.status_code == 413
    assert len(set(stored_objects(platform.data_dir)) - objects) == 1  # the first part only
    client.uploads.cancel(upload.id)
    assert set(stored_objects(platform.data_dir)) == objects


def test_file_over_the_size_limit_is_413(
    limited: Server, platform: Platform, unique: Callable[[str], str]
) -> None:
    key = platform.create_user(unique("big"))
    response = httpx.post(
        f"{limited.base_url}/files",
        headers=auth(key),
        files={"file": ("big.bin", os.urandom(700 * KiB))},
        data={"purpose": "user_data"},
    )
    assert_413(response, "payload_too_large")
    assert "at most 614400 bytes" in response.json()["error"]["message"]
    assert spooled(platform.data_dir) == []


def test_retention_and_upload_expiry(platform: Platform, unique: Callable[[str], str]) -> None:
    env = {
        "HEPAI_SERVER_FILE_RETENTION_DAYS": str(3 / 86400),  # three seconds
        "HEPAI_SERVER_UPLOAD_EXPIRY_SECONDS": "3",
        "HEPAI_SERVER_FILE_SWEEP_SECONDS": "0.5",
    }
    key = platform.create_user(unique("retention"))
    with platform.serve(env=env) as server:
        client = server.openai(key)
        before = set(stored_objects(platform.data_dir))
        file = client.files.create(file=("short.txt", b"short-lived"), purpose="user_data")
        assert file.expires_at is not None and file.expires_at - file.created_at in (2, 3, 4)
        upload = client.uploads.create(
            bytes=10, filename="u.bin", mime_type="x/y", purpose="user_data"
        )
        client.uploads.parts.create(upload.id, data=b"12345")
        assert len(set(stored_objects(platform.data_dir)) - before) == 2

        deadline = time.monotonic() + 15
        while set(stored_objects(platform.data_dir)) - before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert set(stored_objects(platform.data_dir)) - before == set()
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(file.id)
        with pytest.raises(openai.BadRequestError) as expired:
            client.uploads.parts.create(upload.id, data=b"67890")
        assert "expired" in str(expired.value)


def peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])


def test_150mb_resumable_upload_with_bounded_memory(
    platform: Platform,
    unique: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "dataset.bin"
    digest = hashlib.sha256()
    with path.open("wb") as sink:
        for _ in range(150):
            block = os.urandom(MiB)
            digest.update(block)
            sink.write(block)
    monkeypatch.setenv("HEPAI_UPLOAD_STATE_PATH", str(tmp_path / "uploads.json"))
    key = platform.create_user(unique("bulk"))
    with platform.serve() as server:
        client = server.hepai(key)
        client.models.list()  # warm: the process has imported and connected everything
        baseline = peak_rss_kib(server.process.pid)
        uploaded = client.files.upload_resumable(str(path), purpose="user_data")
        grown_mib = (peak_rss_kib(server.process.pid) - baseline) / 1024
        assert uploaded.bytes == 150 * MiB
        assert grown_mib < 64, f"peak RSS grew by {grown_mib:.0f} MiB for a 150 MiB upload"

        downloaded = hashlib.sha256()
        with httpx.stream(
            "GET", f"{server.base_url}/files/{uploaded.id}/content", headers=auth(key)
        ) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                downloaded.update(chunk)
        assert downloaded.hexdigest() == digest.hexdigest()
        assert (tmp_path / "uploads.json").read_text().strip() in ("{}", "")


def test_cli_storage_use_and_purge(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    name = unique("cli-files")
    key = platform.create_user(name)
    server.openai(key).files.create(file=("one.bin", b"x" * 1000), purpose="user_data")
    server.openai(key).files.create(file=("two.bin", b"y" * 500), purpose="user_data")
    rows = [line.split("\t") for line in platform.cli("files", "usage").stdout.splitlines()]
    assert [name, "2", "1500"] in [row[1:] for row in rows]
    purged = platform.cli("files", "purge").stdout
    assert purged.startswith("removed 0 expired files")
