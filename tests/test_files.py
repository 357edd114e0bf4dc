"""The file service through the real clients: upload, list, retrieve, download (with Range),
delete, resumable uploads, ownership and filenames.

In process with the openai client, but for the hepai client and what the database can change
(listing order and pages, row locks of resumable uploads), which run against real servers on
SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.inprocess import Account, App
from tests.stack import Platform, Server


def png(width: int = 4, height: int = 3) -> bytes:
    """A valid RGB PNG, built by hand so the tests need no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = b"".join(b"\x00" + bytes([200, 30, 30]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def stored_objects(data_dir: Path) -> list[Path]:
    """Every object of the local store (not the spool)."""
    root = data_dir / "files"
    return [p for p in root.rglob("*") if p.is_file() and ".spool" not in p.parts]


def spooled(data_dir: Path) -> list[Path]:
    return list((data_dir / "files" / ".spool").glob("*"))


@pytest.fixture
def alice(make_user: Callable[..., Account], unique: Callable[[str], str]) -> Account:
    return make_user(unique("alice"))


@pytest.fixture
def bob(make_user: Callable[..., Account], unique: Callable[[str], str]) -> Account:
    return make_user(unique("bob"))


@pytest.fixture
def carol(platform: Platform, unique: Callable[[str], str]) -> str:
    """A user of the served platform (alice and bob are the in-process app's)."""
    return platform.create_user(unique("carol"))


@pytest.mark.both_databases
def test_upload_list_retrieve_download_delete(server: Server, carol: str) -> None:
    client = server.openai(carol)
    content = os.urandom(100_000)
    created = client.files.create(file=("notes.bin", content), purpose="user_data")
    assert re.fullmatch(r"file-[0-9a-f]{32}", created.id)
    assert (created.object, created.bytes, created.filename) == ("file", 100_000, "notes.bin")
    assert (created.purpose, created.status) == ("user_data", "processed")

    assert [f.id for f in client.files.list()] == [created.id]
    assert client.files.retrieve(created.id).bytes == 100_000
    assert client.files.content(created.id).content == content

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(created.id)
    assert list(client.files.list()) == []


def test_hepai_client_uploads_and_downloads(server: Server, carol: str, tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.4 " + os.urandom(5000))
    client = server.hepai(carol)
    uploaded = client.files.upload(str(path), purpose="user_data")
    assert (uploaded.filename, uploaded.bytes) == ("report.pdf", path.stat().st_size)
    assert client.files.content(uploaded.id).content == path.read_bytes()
    assert client.files.retrieve(uploaded.id).id == uploaded.id


@pytest.mark.both_databases
def test_list_pages_with_after_newest_first(server: Server, carol: str) -> None:
    client = server.openai(carol)
    ids = [client.files.create(file=(f"{i}.txt", b"x"), purpose="user_data").id for i in range(5)]
    first = client.files.list(limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2] and first.has_more
    assert [f.id for f in client.files.list(limit=2)] == ids[::-1]  # auto-pagination
    assert [f.id for f in client.files.list(limit=3, order="asc")] == ids
    last = client.files.list(limit=2, after=ids[1])
    assert [f.id for f in last.data] == [ids[0]] and not last.has_more
    assert [f.id for f in client.files.list(purpose="batch")] == []
    with pytest.raises(openai.BadRequestError):
        client.files.list(limit=0)


async def test_range_requests(app: App, alice: Account) -> None:
    content = bytes(range(256)) * 40
    async with app.openai(alice.key) as api, app.client() as client:
        file_id = (await api.files.create(file=("r.bin", content), purpose="user_data")).id

        async def get(range_header: str | None) -> httpx.Response:
            headers = auth(alice.key) | ({"range": range_header} if range_header else {})
            return await client.get(f"/apiv2/files/{file_id}/content", headers=headers)

        whole = await get(None)
        assert (whole.status_code, whole.content) == (200, content)
        assert whole.headers["accept-ranges"] == "bytes"
        middle = await get("bytes=100-199")
        assert (middle.status_code, middle.content) == (206, content[100:200])
        assert middle.headers["content-range"] == f"bytes 100-199/{len(content)}"
        assert middle.headers["content-length"] == "100"
        assert (await get("bytes=10000-")).content == content[10000:]
        assert (await get("bytes=-7")).content == content[-7:]
        assert (await get("bytes=10230-99999")).content == content[10230:]
        past = await get(f"bytes={len(content)}-")
        assert past.status_code == 416
        assert past.headers["content-range"] == f"bytes */{len(content)}"
        assert past.json()["error"]["code"] == "range_not_satisfiable"
        # Several ranges, another unit or a reversed range: ignored, the whole file is sent.
        for ignored in ("bytes=0-1,5-6", "items=0-3", "bytes=9-2"):
            response = await get(ignored)
            assert (response.status_code, response.content) == (200, content), ignored


async def test_someone_elses_file_answers_like_a_missing_one(
    app: App, client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    async with app.openai(alice.key) as as_alice, app.openai(bob.key) as as_bob:
        created = await as_alice.files.create(file=("a.txt", b"alice's"), purpose="user_data")
        missing = "file-" + "0" * 32
        for method, suffix in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
            answers = [
                await client.request(method, f"/apiv2/files/{fid}{suffix}", headers=auth(bob.key))
                for fid in (created.id, missing)
            ]
            assert [a.status_code for a in answers] == [404, 404]
            assert answers[0].text.replace(created.id, "ID") == answers[1].text.replace(
                missing, "ID"
            )
        assert [f async for f in as_bob.files.list()] == []
        assert (await as_alice.files.content(created.id)).content == b"alice's"


async def test_files_need_a_key(client: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/files"), ("POST", "/files"), ("POST", "/uploads")):
        response = await client.request(method, "/apiv2" + path)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("/abs/path/photo.png", "photo.png"),
        ("red\x1b[31m.txt", "red[31m.txt"),
        ("..", "upload"),
        ("名字 with spaces.docx", "名字 with spaces.docx"),
    ],
)
async def test_filenames_are_kept_as_names_never_as_paths(
    app: App, client: httpx.AsyncClient, alice: Account, given: str, kept: str
) -> None:
    data_dir = app.platform.settings.data_dir
    async with app.openai(alice.key) as api:
        created = await api.files.create(file=(given, b"payload"), purpose="user_data")
    assert created.filename == kept
    for path in stored_objects(data_dir):
        relative = path.relative_to(data_dir / "files")
        assert re.fullmatch(r"[0-9a-f]{2}/[0-9a-f]{32}", relative.as_posix()), relative
    assert not (data_dir / "etc").exists()
    response = await client.get(f"/apiv2/files/{created.id}/content", headers=auth(alice.key))
    assert "/" not in response.headers["content-disposition"].split("filename*=")[0]


async def test_bad_uploads_are_400(app: App, client: httpx.AsyncClient, alice: Account) -> None:
    url, headers = "/apiv2/files", auth(alice.key)
    cases = [
        await client.post(url, headers=headers, json={"purpose": "user_data"}),  # not multipart
        await client.post(url, headers=headers, data={"purpose": "user_data"}),  # no file
        await client.post(
            url, headers=headers, data={"purpose": "no such PURPOSE"}, files={"file": b"x"}
        ),
        await client.post(url, headers=headers, files={"other": ("x.txt", b"x")}),
        await client.post(
            url,
            headers=headers | {"content-type": "multipart/form-data; boundary=zz"},
            content=b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n'
            b"\r\npartial and never closed",
        ),
    ]
    for response in cases:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"
    async with app.openai(alice.key) as api:
        assert [f async for f in api.files.list()] == []
    assert spooled(app.platform.settings.data_dir) == []


# -- resumable uploads --------------------------------------------------------------------------


@pytest.mark.both_databases
def test_resumable_upload_with_the_openai_client(server: Server, carol: str) -> None:
    client = server.openai(carol)
    content = os.urandom(300_000)
    upload = client.uploads.create(
        bytes=len(content),
        filename="big.bin",
        mime_type="application/octet-stream",
        purpose="user_data",
    )
    assert (upload.status, upload.bytes, upload.object) == ("pending", len(content), "upload")
    assert upload.expires_at > upload.created_at
    first = client.uploads.parts.create(upload.id, data=content[:100_000])
    orphan = client.uploads.parts.create(upload.id, data=os.urandom(10))  # a failed retry's
    second = client.uploads.parts.create(upload.id, data=content[100_000:])
    assert (first.object, first.upload_id) == ("upload.part", upload.id)
    md5 = hashlib.md5(content).hexdigest()
    done = client.uploads.complete(upload.id, part_ids=[first.id, second.id], md5=md5)
    assert done.status == "completed" and done.file is not None
    assert done.file.bytes == len(content)
    assert client.files.content(done.file.id).content == content
    # The client lost the answer and asks again: the same upload and file, not an error.
    again = client.uploads.complete(upload.id, part_ids=[first.id, second.id], md5=md5)
    assert again.file is not None and again.file.id == done.file.id
    with pytest.raises(openai.BadRequestError):
        client.uploads.parts.create(upload.id, data=b"late")
    assert orphan.id not in {f.id for f in client.files.list()}


async def test_md5_mismatch_is_refused_and_the_upload_stays_open(app: App, alice: Account) -> None:
    async with app.openai(alice.key) as api:
        upload = await api.uploads.create(
            bytes=6, filename="m.txt", mime_type="text/plain", purpose="user_data"
        )
        part = await api.uploads.parts.create(upload.id, data=b"abcdef")
        with pytest.raises(openai.BadRequestError) as refused:
            await api.uploads.complete(upload.id, part_ids=[part.id], md5="0" * 32)
        assert refused.value.body["param"] == "md5"  # type: ignore[index]
        assert [f async for f in api.files.list()] == []
        done = await api.uploads.complete(
            upload.id, part_ids=[part.id], md5=hashlib.md5(b"abcdef").hexdigest()
        )
        assert done.file is not None
        assert (await api.files.content(done.file.id)).content == b"abcdef"


async def test_size_mismatches_are_refused(app: App, alice: Account) -> None:
    async with app.openai(alice.key) as api:
        upload = await api.uploads.create(
            bytes=10, filename="s.txt", mime_type="text/plain", purpose="user_data"
        )
        part = await api.uploads.parts.create(upload.id, data=b"12345")
        with pytest.raises(openai.BadRequestError) as short:
            await api.uploads.complete(upload.id, part_ids=[part.id])
        assert "declared 10" in str(short.value)
        with pytest.raises(openai.APIStatusError) as over:
            await api.uploads.parts.create(upload.id, data=b"12345678901")
        assert over.value.status_code == 413
        with pytest.raises(openai.BadRequestError):
            await api.uploads.complete(upload.id, part_ids=[part.id, part.id])
        with pytest.raises(openai.BadRequestError):
            await api.uploads.complete(upload.id, part_ids=["part-" + "0" * 32])


async def test_cancel_removes_the_parts(app: App, alice: Account) -> None:
    data_dir = app.platform.settings.data_dir
    async with app.openai(alice.key) as api:
        before = set(stored_objects(data_dir))
        upload = await api.uploads.create(
            bytes=8, filename="c.txt", mime_type="text/plain", purpose="user_data"
        )
        await api.uploads.parts.create(upload.id, data=b"1234")
        assert len(set(stored_objects(data_dir)) - before) == 1
        cancelled = await api.uploads.cancel(upload.id)
        assert cancelled.status == "cancelled"
        assert set(stored_objects(data_dir)) - before == set()
        with pytest.raises(openai.BadRequestError):
            await api.uploads.parts.create(upload.id, data=b"5678")


async def test_someone_elses_upload_answers_like_a_missing_one(
    app: App, client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    async with app.openai(alice.key) as api:
        upload = await api.uploads.create(
            bytes=4, filename="u.txt", mime_type="text/plain", purpose="user_data"
        )
    missing = "upload-" + "0" * 32
    for suffix, body in (("/cancel", None), ("/complete", {"part_ids": []})):
        answers = [
            await client.post(f"/apiv2/uploads/{uid}{suffix}", headers=auth(bob.key), json=body)
            for uid in (upload.id, missing)
        ]
        assert [a.status_code for a in answers] == [404, 404]
        assert answers[0].text.replace(upload.id, "ID") == answers[1].text.replace(missing, "ID")
    part = await client.post(
        f"/apiv2/uploads/{upload.id}/parts", headers=auth(bob.key), files={"data": b"1234"}
    )
    assert part.status_code == 404


async def test_empty_file_uploads_both_ways(app: App, alice: Account) -> None:
    async with app.openai(alice.key) as api:
        assert (await api.files.create(file=("empty.txt", b""), purpose="user_data")).bytes == 0
        upload = await api.uploads.create(
            bytes=0, filename="e.txt", mime_type="text/plain", purpose="user_data"
        )
        done = await api.uploads.complete(upload.id, part_ids=[], md5=hashlib.md5(b"").hexdigest())
        assert done.file is not None and done.file.bytes == 0
