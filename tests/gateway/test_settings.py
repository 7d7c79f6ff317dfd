"""Settings from the environment, and the remote stand-in decision."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError
from support.scripted_engine import ScriptedEngine

from service.engines import build_engine_set
from service.settings import Settings


def test_env_prefix_and_openai_key_alias(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MGW_REMOTE_MODEL", "gpt-4o")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("MGW_DATA_DIR", str(tmp_path))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.remote_model == "gpt-4o"
    assert settings.remote_configured
    spec = settings.remote_engine_spec()
    assert spec is not None and spec.api_key == "sk-test"
    assert "sk-test" not in repr(settings) and "sk-test" not in repr(spec)


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("MGW_LOCAL_MAX_MODEL_LEN=2048\n")
    settings = Settings(_env_file=env)  # type: ignore[call-arg]
    assert settings.local_max_model_len == 2048


def test_invalid_values_name_the_field(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValidationError, match="local_max_model_len"):
        make_settings(local_max_model_len=0)
    with pytest.raises(ValidationError, match="local_engine"):
        make_settings(local_engine="ollama")


async def test_without_remote_the_local_engine_stands_in(
    make_settings: Callable[..., Settings],
) -> None:
    local = ScriptedEngine()
    engines = build_engine_set(make_settings(), local=local)
    assert engines.remote_stand_in
    assert engines.remote is local
    assert engines.describe()["remote"]["stand_in"] is True
    await engines.aclose()
    assert local.closed


async def test_with_remote_an_openai_engine_is_built(
    make_settings: Callable[..., Settings],
) -> None:
    engines = build_engine_set(
        make_settings(remote_base_url="http://127.0.0.1:9/v1", remote_model="m"),
        local=ScriptedEngine(),
    )
    assert not engines.remote_stand_in
    assert engines.remote.kind == "openai"
    assert engines.remote.model == "m"
    await engines.aclose()
