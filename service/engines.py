"""The pair of engines a deployment runs with: the local model and the remote one.

Without a remote configured, the local engine stands in for the remote and ``remote_stand_in``
says so; nothing downstream may hide that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from engines.base import Engine
from engines.factory import create_engine
from engines.tokenizer_only import TokenizerOnlyEngine
from service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class EngineSet:
    local: Engine
    remote: Engine
    remote_stand_in: bool

    def describe(self) -> dict[str, Any]:
        return {
            "local": self.local.describe(),
            "remote": {**self.remote.describe(), "stand_in": self.remote_stand_in},
        }

    async def aclose(self) -> None:
        if self.remote is not self.local:
            await self.remote.aclose()
        await self.local.aclose()

    async def __aenter__(self) -> EngineSet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def build_engine_set(settings: Settings, *, local: Engine | None = None) -> EngineSet:
    """Build both engines from settings (``local`` may be passed in, already running). With
    ``MGW_LOCAL_POOL`` and the in-process kind, the local engine is its tokenizer only: the
    model runs on the pool's workers, and this process loads no weights."""
    local_engine = local
    if local_engine is None and settings.local_pool is not None and settings.local_engine == "vllm":
        local_engine = TokenizerOnlyEngine.load(
            settings.local_model, settings.data_dir, context_window=settings.local_max_model_len
        )
    local_engine = local_engine or create_engine(settings.local_engine_spec())
    remote_spec = settings.remote_engine_spec()
    if remote_spec is None:
        logger.warning(
            "no remote model configured (MGW_REMOTE_BASE_URL / OPENAI_API_KEY): the local model "
            "%s stands in for the remote, and every response says so",
            local_engine.model,
        )
        return EngineSet(local=local_engine, remote=local_engine, remote_stand_in=True)
    return EngineSet(local=local_engine, remote=create_engine(remote_spec), remote_stand_in=False)
