"""Build an engine from an ``EngineSpec``: one table of adapters, no isinstance dispatch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engines.base import Engine, EngineSpec
from engines.child_guard import ChildGuard
from engines.errors import EngineConfigError

# Options of a local OpenAI-compatible server (``LocalServerEngine``) that other adapters ignore:
# a worker may run the local spec with another engine kind.
LOCAL_SERVER_OPTIONS = frozenset(
    {
        "side",
        "max_concurrency",
        "stall_timeout_s",
        "deadline_s",
        "max_retries",
        "tokenizer",
        "context_window",
    }
)


def _vllm(spec: EngineSpec) -> Engine:
    from engines.bundled_model import resolve_local_model
    from engines.vllm_engine import VLLMEngine

    options = {k: v for k, v in spec.options.items() if k not in LOCAL_SERVER_OPTIONS}
    data_dir = Path(options.pop("data_dir", Path.cwd() / ".mgw"))
    model_path = resolve_local_model(spec.model, data_dir)
    # vLLM's engine processes must not outlive this one, however it dies (engines.child_guard);
    # engines left by a dead process of this data dir are stopped first.
    guard = ChildGuard(data_dir / "engines")
    try:
        engine = VLLMEngine.start(model_path, model_name=spec.model, **options)
    except BaseException:
        guard.close()
        raise
    engine.child_guard = guard
    return engine


def _openai(spec: EngineSpec) -> Engine:
    if spec.options.get("side") == "local":
        return _local_server(spec)
    from engines.openai_engine import OpenAIEngine

    in_process_only = {"data_dir", "max_num_seqs", "tensor_parallel_size"}
    options = {k: v for k, v in spec.options.items() if k not in in_process_only}
    if "max_model_len" in options:
        options["context_window"] = options.pop("max_model_len")
    return OpenAIEngine(spec.model, base_url=spec.base_url, api_key=spec.api_key, **options)


def _local_server(spec: EngineSpec) -> Engine:
    """The local model behind an OpenAI-compatible server: streaming, queued, server-aware."""
    from engines.local_server_engine import LocalServerEngine

    options = {k: v for k, v in spec.options.items() if k in LOCAL_SERVER_OPTIONS - {"side"}}
    return LocalServerEngine(spec.model, base_url=spec.base_url, api_key=spec.api_key, **options)


ADAPTERS: dict[str, Callable[[EngineSpec], Engine]] = {"vllm": _vllm, "openai": _openai}


def create_engine(spec: EngineSpec) -> Engine:
    try:
        build = ADAPTERS[spec.kind]
    except KeyError:
        raise EngineConfigError(
            "engine", f"unknown engine {spec.kind!r}; one of {sorted(ADAPTERS)}"
        ) from None
    return build(spec)
