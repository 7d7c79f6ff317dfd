"""Mutual-information scoring cost: naive full passes vs prefix-KV reuse, same scorer, same run.

The estimator scores N·M compressions against each of N contexts. Each context is one *group*:
its prefix plus all N·M compressions. Both methods run the same groups with the same model and
batch size (``analysis.prefix_scoring.score_continuations``); every group is the same shape, so
timing ``--groups K`` of the N groups and scaling by N / K gives the full-estimate cost, and the
speedup is measured, not scaled. The run also reports how far the two methods' log-probs differ.

CPU, the bundled SmolLM2-135M (N=16 contexts of 1,000 tokens, M=2 compressions of 64 tokens):

    .venv/bin/python benchmarks/mi_scoring.py [--groups 2] [--threads 1]

GPU, a randomly initialised ~0.5B Qwen2-style model (torch + transformers only, no downloads):

    python benchmarks/mi_scoring.py --device cuda --config-0.5b --n 64 --out OUT_DIR

Token ids are random: timing does not depend on the text. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, Qwen2Config  # noqa: E402

from analysis.prefix_scoring import score_continuations, use_grouped_query_sdpa  # noqa: E402

logger = logging.getLogger("benchmarks.mi_scoring")

BUNDLED_MODEL_DIR = REPO_ROOT / ".mgw" / "test-data" / "models" / "smollm2-135m-instruct"


def qwen2_half_billion_config() -> Qwen2Config:
    """Qwen2.5-0.5B's shape (494M parameters with tied embeddings), built in code."""
    return Qwen2Config(
        vocab_size=151_936,
        hidden_size=896,
        intermediate_size=4_864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32_768,
        tie_word_embeddings=True,
    )


def load_model(args: argparse.Namespace) -> tuple[Any, str]:
    device = torch.device(args.device)
    if args.config_05b:
        torch.manual_seed(args.seed)
        # Initialised directly on the device: 0.5B random weights take seconds there, not minutes.
        with device:
            model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
                qwen2_half_billion_config(), dtype=torch.float32
            )
        return model.eval(), "qwen2-0.5b-config (random weights)"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = Path(args.model_dir)
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"no model at {model_dir}: run the tests once or pass --model-dir")
    loaded: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    return loaded.to(device).eval(), model_dir.name


def make_inputs(
    vocab: int, n: int, m: int, context_tokens: int, compression_tokens: int, seed: int
) -> tuple[list[list[int]], list[list[int]]]:
    generator = torch.Generator().manual_seed(seed)
    # Ids from the middle of the vocabulary: clear of special tokens at either end.
    low, high = 100, min(vocab - 100, 40_000)

    def ids(length: int) -> list[int]:
        return torch.randint(low, high, (length,), generator=generator).tolist()

    contexts = [ids(context_tokens) for _ in range(n)]
    compressions = [ids(compression_tokens) for _ in range(n * m)]
    return contexts, compressions


def time_group(
    model: Any, context: list[int], compressions: list[list[int]], *, reuse: bool, batch: int
) -> tuple[float, list[float]]:
    started = time.perf_counter()
    scores = score_continuations(model, context, compressions, reuse_prefix=reuse, batch_size=batch)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, scores


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, model_label = load_model(args)
    use_grouped_query_sdpa(model)  # as TransformersPrefixScorer does; for both methods
    load_s = time.perf_counter() - started
    logger.info("model %s ready in %.1f s", model_label, load_s)
    groups = args.groups or (8 if args.device == "cuda" else 2)
    groups = min(groups, args.n)
    batch_size = args.batch_size or (32 if args.device == "cuda" else 8)
    contexts, compressions = make_inputs(
        model.config.vocab_size,
        args.n,
        args.m,
        args.context_tokens,
        args.compression_tokens,
        args.seed,
    )
    timed = contexts[:groups]
    # Warm-up on a small slice: first-call allocation and kernel selection stay out of timings.
    for reuse in (True, False):
        time_group(model, timed[0], compressions[:batch_size], reuse=reuse, batch=batch_size)
    # The methods alternate group by group, so a change in machine load hits both alike.
    naive_s = reuse_s = 0.0
    naive_scores, reuse_scores = [], []
    for index, context in enumerate(timed):
        seconds, scores = time_group(model, context, compressions, reuse=False, batch=batch_size)
        naive_s += seconds
        naive_scores.append(scores)
        seconds, scores = time_group(model, context, compressions, reuse=True, batch=batch_size)
        reuse_s += seconds
        reuse_scores.append(scores)
        logger.info(
            "group %d/%d: naive %.2f s, prefix reuse %.2f s so far",
            index + 1,
            groups,
            naive_s,
            reuse_s,
        )
    max_diff = max(
        abs(a - b)
        for naive_row, reuse_row in zip(naive_scores, reuse_scores, strict=True)
        for a, b in zip(naive_row, reuse_row, strict=True)
    )
    scale = args.n / groups
    scored = groups * len(compressions)
    return {
        "device": torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "model": model_label,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "dtype": "float32",
        "attention": model.config._attn_implementation,
        "n_contexts": args.n,
        "m_compressions_per_context": args.m,
        "context_tokens": args.context_tokens,
        "compression_tokens": args.compression_tokens,
        "batch_size": batch_size,
        "groups_timed": groups,
        "continuations_scored_per_method": scored,
        "model_load_s": round(load_s, 2),
        "naive_s": round(naive_s, 3),
        "prefix_reuse_s": round(reuse_s, 3),
        "speedup": round(naive_s / reuse_s, 2),
        "naive_s_full_estimate": round(naive_s * scale, 2),
        "prefix_reuse_s_full_estimate": round(reuse_s * scale, 2),
        "max_abs_logprob_diff_nats": max_diff,
        "torch": torch.__version__,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--config-0.5b",
        dest="config_05b",
        action="store_true",
        help="random-weight Qwen2 0.5B configuration instead of the bundled model",
    )
    parser.add_argument("--model-dir", default=str(BUNDLED_MODEL_DIR))
    parser.add_argument("--n", type=int, default=16, help="contexts (N)")
    parser.add_argument("--m", type=int, default=2, help="compressions per context (M)")
    parser.add_argument("--context-tokens", type=int, default=1000)
    parser.add_argument("--compression-tokens", type=int, default=64)
    parser.add_argument(
        "--groups",
        type=int,
        default=0,
        help="context groups to time with both methods (default 2 CPU, 8 GPU)",
    )
    parser.add_argument("--batch-size", type=int, default=0, help="default 8 CPU, 32 GPU")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="directory for mi_scoring.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    summary = measure(args)
    text = json.dumps(summary, indent=2)
    sys.stdout.write(text + "\n")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "mi_scoring.json").write_text(text + "\n")
        logger.info("wrote %s", out / "mi_scoring.json")


if __name__ == "__main__":
    main()
