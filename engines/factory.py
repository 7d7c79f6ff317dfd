"""Build an engine from an ``EngineSpec``: one table of adapters, no isinstance dispatch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engines.base import Engine, EngineSpec
from engines.errors import EngineConfigError


def _vllm(spec: EngineSpec) -> Engine:
    from engines.bundled_model import resolve_local_model
    from engines.vllm_engine import VLLMEngine

    options = dict(spec.options)
    data_dir = Path(options.pop("data_dir", Path.cwd() / ".mgw"))
    return VLLMEngine.start(
        resolve_local_model(spec.model, data_dir), model_name=spec.model, **options
    )


def _openai(spec: EngineSpec) -> Engine:
    from engines.openai_engine import OpenAIEngine

    options = {k: v for k, v in spec.options.items() if k not in {"data_dir", "max_num_seqs"}}
    if "max_model_len" in options:
        options["context_window"] = options.pop("max_model_len")
    return OpenAIEngine(spec.model, base_url=spec.base_url, api_key=spec.api_key, **options)


ADAPTERS: dict[str, Callable[[EngineSpec], Engine]] = {"vllm": _vllm, "openai": _openai}


def create_engine(spec: EngineSpec) -> Engine:
    try:
        build = ADAPTERS[spec.kind]
    except KeyError:
        raise EngineConfigError(
            "engine", f"unknown engine {spec.kind!r}; one of {sorted(ADAPTERS)}"
        ) from None
    return build(spec)
