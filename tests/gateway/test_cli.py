"""The ``minions-gw`` command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.paths import MODEL_CACHE_DIR

CLI = [sys.executable, "-m", "cli"]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_models_lists_the_stand_in_without_loading_anything() -> None:
    result = run_cli("models")
    assert result.returncode == 0, result.stderr
    assert "smollm2-135m-instruct" in result.stdout
    assert "stand-in" in result.stdout


def test_models_shows_configured_remote_and_price() -> None:
    result = run_cli(
        "models", env={"MGW_REMOTE_BASE_URL": "http://127.0.0.1:9/v1", "MGW_REMOTE_MODEL": "gpt-4o"}
    )
    assert result.returncode == 0, result.stderr
    assert "gpt-4o" in result.stdout and "stand-in" not in result.stdout


def test_generate_rejects_bad_input_clearly() -> None:
    result = run_cli("generate", "hi", "--max-tokens", "0")
    assert result.returncode != 0
    assert "max_tokens" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("generate", "hi", "--engine", "cloud")
    assert result.returncode != 0 and "engine" in result.stderr


@pytest.mark.model
def test_generate_answers_from_the_bundled_model(tmp_path: Path) -> None:
    result = run_cli(
        "generate",
        "Say hello",
        "--max-tokens",
        "16",
        "--engine",
        "remote",
        "--json",
        env={"MGW_DATA_DIR": str(MODEL_CACHE_DIR)},
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout)
    assert payload["text"].strip()
    assert payload["remote"] == {"stand_in": True}
    assert payload["usage"]["prompt_tokens"] > 0
    assert 0 < payload["usage"]["completion_tokens"] <= 16
    assert payload["cost_usd"] == 0.0
