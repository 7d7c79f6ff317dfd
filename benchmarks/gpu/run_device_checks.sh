#!/usr/bin/env bash
# The one prepared GPU-machine run of a session (see docs/benchmarks.md). Session 2: the SSM
# study's full preset (rerun after the MIMO experiment landed), and the gateway and job-queue
# overhead benchmarks on the machine's quiet 16 CPU cores (they need no GPU; this dev machine has
# 2 shared cores). Carry .whl: wheels for the GPU image's Python, which lacks the gateway's
# dependencies (fill it with `pip download --python-version 3.12 --only-binary=:all: ...`).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; nproc; python3 -V;
  lscpu | grep -m1 'Model name'; } | tee "$OUT/device.txt"
for run in 1 2 3; do
  timeout 60 python3 benchmarks/gateway_overhead.py --requests 400 --submits 2000 --json \
    >"$OUT/gateway_$run.json" 2>>"$OUT/errors.txt" || echo "gateway run $run failed" | tee -a "$OUT/errors.txt"
done
timeout 120 python3 benchmarks/queue_overhead.py --jobs 20000 >"$OUT/queue.json" 2>>"$OUT/errors.txt"
tail -30 "$OUT/queue.json"
timeout 240 python3 benchmarks/gpu/ssm_full.py /tmp/ssm --seeds 4 >"$OUT/ssm.txt" 2>&1
tail -30 "$OUT/ssm.txt"; cp /tmp/ssm/summary.json "$OUT/ssm_summary.json" 2>/dev/null
tail -5 "$OUT/errors.txt" 2>/dev/null
