"""LoRA study, the parts of the full preset worth a GPU, in about two minutes on an H100/H200.

Usage: ``python benchmarks/gpu/lora_full.py OUT_DIR [--scale S]``

Runs tier 2 (the character GPT) at the full preset's model size (d=512, 4 layers, context 128)
and LoRA ranks (16/64/256), with shorter pretraining and finetuning than the full preset so it
fits a shared GPU window. Tier 1 is left out: its 128x128 matrices are launch-bound on a GPU and
run as fast on a CPU. ``--scale`` multiplies every step count (0.25 for a smoke run).

Needs only torch, numpy, pydantic and matplotlib besides this repository. Writes
``result.json`` and the figures into OUT_DIR and prints a compact summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

# Run from a checkout without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from analysis.studies.base import DeviceName, run_study
from analysis.studies.lora.params import LanguageModelParams, Params

logger = logging.getLogger("lora_full")


def gpu_params(scale: float, device: DeviceName = "cuda") -> Params:
    """The full preset's model and ranks, with step counts cut to fit ~2 minutes."""
    full = Params.preset("full", device=device)
    model = full.language_model.model_dump()
    model.update(
        pretrain_steps=max(10, round(1500 * scale)),
        finetune_steps=max(8, round(600 * scale)),
        checkpoints=4,
        full_ft_lrs=[3e-4, 1e-3],
        lora_lrs=[1e-3, 3e-3],
        eval_sequences=256,
    )
    return Params(
        preset="full",
        device=device,
        seed=0,
        teacher=full.teacher,
        language_model=LanguageModelParams(**model),
        run_teacher=False,
    )


def summarise(metrics: dict[str, Any]) -> list[str]:
    """A few lines: per method at its chosen LR, code bpc, forgetting, mean rank90."""
    tier2 = metrics["tier2"]
    lines = [
        f"pretrained: prose bpc {tier2['base_source_bpc']:.3f}, "
        f"code bpc {tier2['base_target_bpc']:.3f}",
        f"{'method':18s} {'lr':>8s} {'code bpc':>9s} {'forget':>8s} {'rank90':>7s}",
    ]
    for method, row in tier2["summary"]["final_at_chosen_lrs"].items():
        lr = tier2["chosen_lrs"].get(method, tier2["chosen_lrs"]["full"])
        lines.append(
            f"{method:18s} {lr:8.1e} {row['target_bpc']:9.3f} {row['forgetting']:+8.3f} "
            f"{row['mean_rank90']:7.1f}"
        )

    def mean(values: dict[str, int]) -> float:
        return sum(values.values()) / len(values)

    lines.append(
        f"mean rank90: full FT {mean(tier2['full_ft_rank90']):.1f}, control "
        f"{mean(tier2['control_rank90']):.1f}, random {mean(tier2['random_baseline_rank90']):.1f}"
        f" (min dim {min(tier2['module_min_dim'].values())})"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: smoke test")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if arguments.device == "cuda" and not torch.cuda.is_available():
        logger.error("no CUDA device; this script is for a GPU machine")
        return 2
    # TF32 matmuls: ~5x faster than strict fp32 on Hopper, far below the effects measured here.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    params = gpu_params(arguments.scale, arguments.device)
    started = time.perf_counter()

    def progress(done: int, total: int, message: str = "") -> None:
        logger.info("[%d/%d %.0fs] %s", done, total, time.perf_counter() - started, message)

    result = run_study("lora", params, arguments.out_dir, progress=progress)
    summary = summarise(result.metrics)
    summary.append(
        f"device {result.device_name}, python {platform.python_version()}, "
        f"torch {torch.__version__}, wall {result.seconds:.0f} s"
    )
    (arguments.out_dir / "summary.txt").write_text("\n".join(summary) + "\n")
    (arguments.out_dir / "summary.json").write_text(
        json.dumps({"lines": summary, "seconds": result.seconds}, indent=2)
    )
    sys.stdout.write("\n".join(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
