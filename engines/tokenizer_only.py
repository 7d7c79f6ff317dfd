"""The local model's tokenizer and nothing else: a gateway whose local-model calls run on queue
workers (``MGW_LOCAL_POOL``) chunks and counts tokens with it, and loads no weights (its image
has no vLLM)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engines.base import Engine, GenerationRequest, GenerationResult
from engines.bundled_model import BUNDLED_MODEL, bundled_gguf_path
from engines.errors import EngineCapabilityError, EngineConfigError

logger = logging.getLogger(__name__)


def load_tokenizer(model: str, data_dir: Path) -> Any:
    """The tokenizer of ``model`` (the bundled model, a local path or a hub id): for the bundled
    model, from its converted copy in ``data_dir`` when there is one, else from its GGUF file
    (the same tokenizer the conversion saves), so no weights are converted for it."""
    from transformers import AutoTokenizer

    try:
        if model != BUNDLED_MODEL:
            return AutoTokenizer.from_pretrained(model)
        converted = data_dir / "models" / BUNDLED_MODEL
        if (converted / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(converted))
        gguf = bundled_gguf_path()
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (OSError, ValueError) as exc:
        message = f"cannot load the tokenizer of {model!r}: {exc}"
        raise EngineConfigError("local_model", message) from exc


class TokenizerOnlyEngine(Engine):
    kind = "tokenizer"

    def __init__(self, tokenizer: Any, *, model: str, context_window: int) -> None:
        super().__init__(model=model, context_window=context_window)
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, model: str, data_dir: Path, *, context_window: int) -> TokenizerOnlyEngine:
        logger.info("local model %s: tokenizer only (its calls run on the pool's workers)", model)
        return cls(load_tokenizer(model, data_dir), model=model, context_window=context_window)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        raise EngineCapabilityError(_NO_MODEL)

    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        raise EngineCapabilityError(_NO_MODEL)


_NO_MODEL = (
    "this process loads no local model: its local-model calls run on the workers of its pool "
    "(MGW_LOCAL_POOL)"
)
