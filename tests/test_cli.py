"""The CLI contract scripts rely on."""

from __future__ import annotations

import pytest

from tests.stack import Platform


def test_user_create_generates_a_password_when_none_is_given(platform: Platform, unique) -> None:
    name = unique("generated")
    result = platform.cli("user", "create", name, "--email", f"{name}@ihep.ac.cn", input="")
    password = result.stdout.strip()
    assert len(password) >= 16
    assert name in platform.cli("user", "list").stdout


def test_duplicate_user_is_a_clear_error(platform: Platform, unique) -> None:
    name = unique("twice")
    platform.cli("user", "create", name, input="a-password\n")
    result = platform.cli("user", "create", name, input="a-password\n", check=False)
    assert result.returncode == 1
    assert "already exists" in result.stderr and "Traceback" not in result.stderr


def test_a_short_password_is_a_clear_error(platform: Platform, unique) -> None:
    name = unique("short")
    result = platform.cli("user", "create", name, input="pw\n", check=False)
    assert result.returncode == 1
    assert "at least 8 characters" in result.stderr and "Traceback" not in result.stderr
    assert name not in platform.cli("user", "list").stdout


def test_key_create_prints_the_key_alone(platform: Platform, unique) -> None:
    name = unique("keyed")
    platform.cli("user", "create", name, input="a-password\n")
    out = platform.cli("key", "create", "--user", name, "--name", "ci").stdout
    assert out.count("\n") == 1 and out.startswith("sk-")


def test_key_for_unknown_user_and_unknown_key_id_fail_cleanly(platform: Platform) -> None:
    result = platform.cli("key", "create", "--user", "nobody-at-all", check=False)
    assert result.returncode == 1 and "no user" in result.stderr
    result = platform.cli("key", "revoke", "99999999", check=False)
    assert result.returncode == 1 and "no API key" in result.stderr


def test_admin_user_and_groups_are_listed(platform: Platform, unique) -> None:
    name = unique("boss")
    platform.cli(
        "user",
        "create",
        name,
        "--admin",
        "--group",
        "physics",
        "--group",
        "ops",
        input="a-password\n",
    )
    listing = platform.cli("user", "list").stdout.splitlines()
    line = next(row for row in listing if row.startswith(name))
    assert "\tadmin\t" in line and "ops,physics" in line


@pytest.mark.both_databases
def test_db_upgrade_is_idempotent(platform: Platform) -> None:
    from hepai_server.db.migrate import HEAD

    for _ in range(2):
        assert f"revision {HEAD}" in platform.cli("db", "upgrade").stdout
