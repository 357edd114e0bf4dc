"""The files page's upload without a browser: a forged or over-quota upload keeps nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from hepai_server.config import Settings
from tests.inprocess import Account, App, LocalPlatform, prepare, running
from tests.portal import PASSWORD, AppVisitor, csrf_token


def stored_files(platform: LocalPlatform, username: str) -> int:
    with platform.session() as session:
        return int(
            session.execute(
                sa.text(
                    "SELECT count(*) FROM files f JOIN users u ON u.id = f.user_id "
                    "WHERE u.username = :name"
                ),
                {"name": username},
            ).scalar_one()
        )


async def test_an_upload_without_the_sessions_token_is_read_and_thrown_away(
    app: App, make_user: Callable[..., Account]
) -> None:
    username = make_user(password=PASSWORD).username
    async with AppVisitor(app) as visitor:
        await visitor.sign_in(username)
        token = csrf_token((await visitor.get("/files")).text)
        for fields in ({}, {"csrf_token": "forged"}):
            refused = await visitor.client.post(
                "/files", data=fields, files={"file": ("a.txt", b"hello", "text/plain")}
            )
            assert refused.status_code == 403
        assert stored_files(app.platform, username) == 0
        cross_site = await visitor.client.post(
            "/files",
            data={"csrf_token": token},
            files={"file": ("a.txt", b"hello", "text/plain")},
            headers={"origin": "http://evil.example"},
        )
        assert cross_site.status_code == 403 and stored_files(app.platform, username) == 0
        accepted = await visitor.client.post(
            "/files", data={"csrf_token": token}, files={"file": ("../../a.txt", b"hello")}
        )
        assert accepted.status_code == 303 and stored_files(app.platform, username) == 1
        assert "a.txt" in (await visitor.get("/files")).text


async def test_an_upload_over_the_quota_answers_413_and_keeps_nothing(
    settings: Settings, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    platform = prepare(
        settings.model_copy(update={"data_dir": tmp_path, "user_storage_quota_bytes": 1000})
    )
    username = platform.make_user(unique("hoarder"), password=PASSWORD).username
    async with running(platform) as app, AppVisitor(app) as visitor:
        await visitor.sign_in(username)
        token = csrf_token((await visitor.get("/files")).text)
        answer = await visitor.client.post(
            "/files", data={"csrf_token": token}, files={"file": ("big.bin", b"x" * 5000)}
        )
        assert answer.status_code == 413
        assert 'role="alert"' in answer.text
        assert stored_files(platform, username) == 0
