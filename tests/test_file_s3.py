"""The file service on an S3-compatible store: a real SeaweedFS server on loopback, the same
client-facing behaviour as the local store, and nothing left in the bucket that should not be."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.s3store import S3Store, seaweedfs
from tests.stack import Platform, Server, free_port
from tests.test_files import auth, stored_objects

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Store]:
    with seaweedfs() as store:
        yield store


@pytest.fixture(scope="module")
def bucket() -> str:
    return f"hepai-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def s3_server(platform: Platform, s3: S3Store, bucket: str) -> Iterator[Server]:
    env = s3.env(bucket) | {"HEPAI_SERVER_USER_STORAGE_QUOTA_BYTES": str(40 * MiB)}
    with platform.serve(env=env) as running:
        yield running


def test_files_live_in_the_bucket(
    s3_server: Server, s3: S3Store, bucket: str, platform: Platform, unique: Callable[[str], str]
) -> None:
    key = platform.create_user(unique("s3"))
    client = s3_server.openai(key)
    local_before = set(stored_objects(platform.data_dir))
    objects_before = s3.keys(bucket)  # the bucket was created at startup
    content = os.urandom(3 * MiB + 17)
    created = client.files.create(file=("data.bin", content), purpose="user_data")
    assert len(s3.keys(bucket) - objects_before) == 1
    assert set(stored_objects(platform.data_dir)) == local_before, "nothing goes to the local store"

    assert client.files.content(created.id).content == content
    ranged = httpx.get(
        f"{s3_server.base_url}/files/{created.id}/content",
        headers=auth(key) | {"range": "bytes=1048576-1048675"},
    )
    assert ranged.status_code == 206 and ranged.content == content[MiB : MiB + 100]
    assert ranged.headers["content-range"] == f"bytes 1048576-1048675/{len(content)}"

    client.files.delete(created.id)
    assert s3.keys(bucket) == objects_before
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)


def test_resumable_upload_leaves_only_the_file(
    s3_server: Server,
    s3: S3Store,
    bucket: str,
    platform: Platform,
    unique: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HEPAI_UPLOAD_STATE_PATH", str(tmp_path / "uploads.json"))
    path = tmp_path / "archive.tar"
    path.write_bytes(os.urandom(12 * MiB + 5))
    key = platform.create_user(unique("s3-resumable"))
    before = s3.keys(bucket)
    file = s3_server.hepai(key).files.upload_resumable(
        str(path), purpose="user_data", part_size=5 * MiB
    )
    assert file.bytes == path.stat().st_size
    assert len(s3.keys(bucket) - before) == 1, "the three parts are gone, the file remains"
    content = s3_server.openai(key).files.content(file.id).content
    assert hashlib.sha256(content).digest() == hashlib.sha256(path.read_bytes()).digest()


def test_quota_refusal_leaves_nothing_in_the_bucket(
    s3_server: Server, s3: S3Store, bucket: str, platform: Platform, unique: Callable[[str], str]
) -> None:
    client = s3_server.openai(platform.create_user(unique("s3-quota")))
    client.files.create(file=("a.bin", os.urandom(30 * MiB)), purpose="user_data")
    before = s3.keys(bucket)
    with pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("b.bin", os.urandom(20 * MiB)), purpose="user_data")
    assert refused.value.status_code == 413
    assert s3.keys(bucket) == before


def test_an_unreachable_store_is_503_and_the_rest_works(
    platform: Platform, s3: S3Store, user_key: str
) -> None:
    dead = S3Store(f"http://127.0.0.1:{free_port()}", s3.workdir)
    secret = "not-the-secret-8f3e1c"
    wrong_secret = s3.env("hepai-badkey") | {"HEPAI_SERVER_S3_SECRET_ACCESS_KEY": secret}
    for env in (dead.env("hepai-dead"), wrong_secret):
        with platform.serve(env=env) as server:
            response = httpx.post(
                f"{server.base_url}/files",
                headers=auth(user_key),
                files={"file": ("x.txt", b"x")},
                data={"purpose": "user_data"},
            )
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "storage_unavailable"
            assert httpx.get(f"{server.base_url}/models", headers=auth(user_key)).status_code == 200
            assert secret not in server.logs(), "the S3 secret must not reach the log"
