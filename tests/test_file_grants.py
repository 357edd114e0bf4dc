"""Workers read the files a call names, as the caller, through a grant the gate signs: never
other files, never other routes, never someone else's files."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from hepai.components.haiddf.hclient._exceptions import HAPIStatusError
from itsdangerous import TimestampSigner

from hepai_server.errors import AuthenticationFailed
from hepai_server.files.grant import FileGrants, file_ids_in
from hepai_server.security.credentials import load_or_create_secret
from tests.stack import Platform, Server, our_worker


def test_worker_reads_only_the_files_its_caller_passed(
    platform: Platform, server: Server, unique: Callable[[str], str]
) -> None:
    owner = unique("grant-owner")
    owner_key = platform.create_user(owner)
    alice_key, bob_key = (platform.create_user(unique(n)) for n in ("alice", "bob"))
    content = os.urandom(70_000)
    alice = server.openai(alice_key)
    passed = alice.files.create(file=("doc.pdf", content), purpose="user_data").id
    kept = alice.files.create(file=("private.txt", b"not for the worker"), purpose="user_data").id
    name = f"{owner}/reader"
    with our_worker(server, owner_key, name, "groups: all"):
        as_alice = server.hepai(alice_key).get_remote_model(name)
        assert as_alice.checksum(file_id=passed) == {
            "bytes": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
        # The grant names `passed` only: alice's other file stays closed to the worker.
        assert as_alice.peek_other(file_id=passed, other_reversed=kept[::-1]) == 401
        # Bob passes alice's file id: the grant is bob's, so the file is not found.
        with pytest.raises(HAPIStatusError) as refused:
            server.hepai(bob_key).get_remote_model(name).checksum(file_id=passed)
        assert refused.value.status_code == 404
        assert "FileNotFoundError" in str(refused.value)
        # A call that names no file carries no grant.
        with pytest.raises(HAPIStatusError) as no_grant:
            as_alice.checksum(file_id="report.pdf")
        assert no_grant.value.status_code == 403


def test_a_grant_opens_nothing_else(platform: Platform, server: Server) -> None:
    for token in ("hfg-forged.token", "hfg-"):
        headers = {"authorization": f"Bearer {token}"}
        for url in (
            f"{server.base_url}/files/file-{'0' * 32}/content",
            f"{server.base_url}/models",
        ):
            assert httpx.get(url, headers=headers).status_code == 401, url
        stored = httpx.post(f"{server.base_url}/files", headers=headers, files={"file": b"x"})
        assert stored.status_code == 401


def test_grants_expire_and_name_their_files(monkeypatch: pytest.MonkeyPatch) -> None:
    grants = FileGrants(b"k" * 32, ttl=1)
    a, b = "file-" + "a" * 32, "file-" + "b" * 32
    token = grants.mint(7, [a, a])
    assert grants.check(token, a) == 7
    with pytest.raises(AuthenticationFailed, match="does not cover"):
        grants.check(token, b)
    with pytest.raises(AuthenticationFailed, match="not valid"):
        FileGrants(b"other-secret" * 3, ttl=60).check(token, a)
    # The signer's clock (whole seconds) five seconds on, instead of waiting them out.
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _self: int(time.time()) + 5)
    with pytest.raises(AuthenticationFailed, match="expired"):
        grants.check(token, a)


def test_file_ids_are_found_anywhere_in_the_call() -> None:
    a, b = "file-" + "a" * 32, "file-" + "b" * 32
    body = {"args": [a, {"deep": [b]}], "kwargs": {"file_id": a, "name": "file-x"}}
    assert file_ids_in(body) == [a, b]
    assert file_ids_in("not a call") == []


def test_the_signing_secret_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    first = load_or_create_secret(path)
    assert len(first) == 32 and load_or_create_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]
