"""The files page's upload without a browser: a forged or over-quota upload keeps nothing."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from tests.portal import Visitor, csrf_token
from tests.stack import Platform, Server


def stored_files(platform: Platform, username: str) -> int:
    engine = sa.create_engine(platform.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    sa.text(
                        "SELECT count(*) FROM files f JOIN users u ON u.id = f.user_id "
                        "WHERE u.username = :name"
                    ),
                    {"name": username},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_an_upload_without_the_sessions_token_is_read_and_thrown_away(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    username = unique("uploader")
    platform.create_user(username)
    with Visitor(server.url) as visitor:
        visitor.sign_in(username)
        token = csrf_token(visitor.get("/files").text)
        for fields in ({}, {"csrf_token": "forged"}):
            refused = visitor.client.post(
                "/files", data=fields, files={"file": ("a.txt", b"hello", "text/plain")}
            )
            assert refused.status_code == 403
        assert stored_files(platform, username) == 0
        cross_site = visitor.client.post(
            "/files",
            data={"csrf_token": token},
            files={"file": ("a.txt", b"hello", "text/plain")},
            headers={"origin": "http://evil.example"},
        )
        assert cross_site.status_code == 403 and stored_files(platform, username) == 0
        accepted = visitor.client.post(
            "/files", data={"csrf_token": token}, files={"file": ("../../a.txt", b"hello")}
        )
        assert accepted.status_code == 303 and stored_files(platform, username) == 1
        assert "a.txt" in visitor.get("/files").text


def test_an_upload_over_the_quota_answers_413_and_keeps_nothing(
    platform: Platform, unique: Callable[[str], str]
) -> None:
    username = unique("hoarder")
    platform.create_user(username)
    with (
        platform.serve(env={"HEPAI_SERVER_USER_STORAGE_QUOTA_BYTES": "1000"}) as server,
        Visitor(server.url) as visitor,
    ):
        visitor.sign_in(username)
        token = csrf_token(visitor.get("/files").text)
        answer = visitor.client.post(
            "/files", data={"csrf_token": token}, files={"file": ("big.bin", b"x" * 5000)}
        )
        assert answer.status_code == 413
        assert 'role="alert"' in answer.text
        assert stored_files(platform, username) == 0
