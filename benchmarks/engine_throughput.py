"""32 short chat requests (~300-token prompts, 64 new tokens) through ``Engine.generate``: as one
batch vs one at a time, on the same engine, in the same run. Prints both wall times and the ratio.

    .venv/bin/python benchmarks/engine_throughput.py [--requests 32] [--repeats 3]

Set VLLM_CPU_NUM_OF_RESERVED_CPU / VLLM_CPU_OMP_THREADS_BIND in the environment to compare the
CPU thread settings (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

from engines.base import GenerationRequest
from engines.bundled_model import ensure_bundled_model
from engines.vllm_engine import VLLMEngine

logger = logging.getLogger("benchmarks.engine_throughput")

FILLER = (
    "The quarterly report covers revenue, operating costs, hiring, and the outlook for the next "
    "two quarters. Each division summarised its results and the risks it sees. "
)


def make_requests(
    engine: VLLMEngine, count: int, prompt_tokens: int, new_tokens: int
) -> list[GenerationRequest]:
    per_filler = engine.count_tokens(FILLER)
    body = FILLER * max(1, prompt_tokens // per_filler)
    return [
        GenerationRequest.from_prompt(
            f"Request {i}. {body}\nSummarise the report above in a long paragraph.",
            max_tokens=new_tokens,
            temperature=0.0,
        )
        for i in range(count)
    ]


async def measure(args: argparse.Namespace) -> dict[str, object]:
    model_dir = ensure_bundled_model(Path(args.data_dir))
    started = time.perf_counter()
    engine = VLLMEngine.start(str(model_dir), model_name="smollm2-135m-instruct")
    startup = time.perf_counter() - started
    requests = make_requests(engine, args.requests, args.prompt_tokens, args.new_tokens)
    await engine.generate(requests[:2])  # warm-up
    batch_times, sequential_times = [], []
    tokens = 0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        results = await engine.generate(requests)
        batch_times.append(time.perf_counter() - t0)
        tokens = sum(r.usage.completion_tokens for r in results)
        t0 = time.perf_counter()
        for request in requests:
            await engine.generate([request])
        sequential_times.append(time.perf_counter() - t0)
    await engine.aclose()
    batch, sequential = statistics.median(batch_times), statistics.median(sequential_times)
    return {
        "requests": args.requests,
        "prompt_tokens": results[0].usage.prompt_tokens,
        "completion_tokens_total": tokens,
        "repeats": args.repeats,
        "engine_start_s": round(startup, 1),
        "batch_s_median": round(batch, 2),
        "sequential_s_median": round(sequential, 2),
        "batch_s_all": [round(t, 2) for t in batch_times],
        "sequential_s_all": [round(t, 2) for t in sequential_times],
        "speedup": round(sequential / batch, 2),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "(default)"),
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "(default)"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=300)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=os.environ.get("MGW_DATA_DIR", ".mgw/test-data"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    summary = asyncio.run(measure(args))
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
