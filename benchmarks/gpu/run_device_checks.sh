#!/usr/bin/env bash
# The one prepared GPU run of a session (see docs/benchmarks.md): MI scoring at 0.5B scale and the
# LoRA study's full-size tier 2. Carry .whl (pydantic wheels: the GPU image lacks pydantic).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
timeout 75 python3 benchmarks/mi_scoring.py --device cuda --config-0.5b --n 64 --out "$OUT/mi" 2>&1 | tail -25
timeout 110 python3 benchmarks/gpu/lora_full.py "$OUT/lora" --scale "${LORA_SCALE:-0.35}" 2>&1 | tail -30
