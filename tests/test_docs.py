"""Docs that cannot rot: every setting is documented."""

from __future__ import annotations

from pathlib import Path

from hepai_server.config import Settings

DOCS = Path(__file__).parent.parent / "docs"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"`HEPAI_SERVER_{name.upper()}`" in text, name


def test_public_names_are_sorted_and_importable() -> None:
    import hepai_server

    assert hepai_server.__all__ == sorted(hepai_server.__all__)
    for name in hepai_server.__all__:
        assert hasattr(hepai_server, name), name


def test_migrate_head_names_the_newest_revision() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from hepai_server.db import migrate

    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == migrate.HEAD
