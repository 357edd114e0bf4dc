"""Settings and the providers file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hepai_server.config import Settings, load_providers


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.yaml"
    path.write_text(text)
    return path


def test_presets_fill_base_url_and_key_variable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "dash-key")
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    path = write(
        tmp_path,
        """
providers:
  - name: aliyun
    preset: dashscope
    models: [{id: aliyun/qwen-max-latest, upstream: qwen-max-latest}]
  - name: deepseek
    preset: deepseek
    models: [{id: deepseek/deepseek-chat}]
  - name: local
    preset: vllm
    base_url: http://10.0.0.5:8000/v1/
    models: [{id: local/llama, type: completion}]
""",
    )
    providers = load_providers(path)
    assert [p.name for p in providers] == ["aliyun", "local"], "deepseek has no key set"
    aliyun, local = providers
    assert aliyun.base_url == "https://dashscope.aliyuncs.com/compatible-mode/v1"
    assert aliyun.api_key is not None and aliyun.api_key.get_secret_value() == "dash-key"
    assert "dash-key" not in repr(aliyun)
    assert local.base_url == "http://10.0.0.5:8000/v1" and local.api_key is None
    assert aliyun.models[0].groups == ["all"] and aliyun.models[0].type == "chat"


@pytest.mark.parametrize(
    "text",
    [
        "providers: [{name: x, models: []}]",  # neither base_url nor preset
        "providers: [{name: x, preset: nope}]",
        "providers: [{name: x, base_url: http://h, models: [{id: m, type: video}]}]",
        "providers: [{name: x, base_url: http://h, typo_field: 1}]",
    ],
)
def test_bad_providers_files_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValidationError):
        load_providers(write(tmp_path, text))


def test_database_url_defaults_to_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.sqlalchemy_url == f"sqlite:///{tmp_path}/hepai.db"
    pg = Settings(data_dir=tmp_path, database_url="postgresql://u@h/db")
    assert pg.sqlalchemy_url == "postgresql+psycopg://u@h/db"
