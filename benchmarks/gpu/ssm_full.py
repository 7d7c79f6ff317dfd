"""Run the SSM study's ``full`` preset on a GPU and print a compact summary.

Usage: ``python benchmarks/gpu/ssm_full.py OUT_DIR [--seeds N] [--device cuda|cpu]``

Writes ``OUT_DIR/result.json`` (the study's result, figures beside it) and ``OUT_DIR/summary.json``
(the numbers printed here). The full preset is L = 16384, M = 512, latent N up to 1024, 8 seeds;
this script runs it with 4 seeds by default (about 100 s on an H200; all 8 took 135 s), since the
per-step cost is launch overhead and the fixed-a error does not vary with the seed. Imports:
torch, numpy, pydantic, matplotlib and this repository's own code only (a bare torch image lacks
pydantic: ``python -m pip install --no-index --find-links .whl pydantic`` where wheels are kept).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from analysis.studies.base import run_study
from analysis.studies.ssm import Params

logger = logging.getLogger("ssm_full")


def summarize(metrics: dict[str, Any], seconds: float, device: str) -> dict[str, Any]:
    """The handful of numbers worth reading in a log."""
    fixed = metrics["fixed_a"]
    sweep = metrics["latent_sweep"]
    learned = metrics["learn_a"]
    depth = metrics["depth"]
    return {
        "device": device,
        "seconds_total": round(seconds, 1),
        "timings_s": metrics["timings_s"],
        "fixed_a": {
            "max_rel_error": fixed["max_rel_error"],
            "fitted_rate": fixed["fitted_rate"],
            "predicted_rate": fixed["predicted_rate"],
            "max_rate_rel_error": fixed["max_rate_rel_error"],
            "causal_sigma_rel_error": {
                a: v["sigma_rel_error_fft"] for a, v in fixed["causal_pitfall"].items()
            },
        },
        "dln_max_abs_diff": metrics["dln_equivalence"]["max_abs_diff"],
        "learn_a": {
            key: learned[key] for key in ("a_final", "abs_a_error_final", "departure_t_over_tau")
        },
        "latent_slopes": {name: e["loglog_slope"] for name, e in sweep["regimes"].items()},
        "latent_max_rel_diff_vs_theory": max(
            e["max_rel_diff_sim_vs_theory"] for e in sweep["regimes"].values()
        ),
        "latent_spot_max_rel_diff": max((c["rel_diff"] for c in sweep["spot_checks"]), default=0.0),
        "depth": {
            "max_t_half_rel_diff": depth["max_t_half_rel_diff"],
            "all_in_predicted_order": depth["all_learned_in_predicted_order"],
        },
        "mimo": metrics.get("mimo"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seeds", type=int, default=4, help="seeds (the preset has 8)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.device == "cuda" and not torch.cuda.is_available():
        logger.error("no CUDA device; pass --device cpu to run the full preset on CPU (slow)")
        return 2
    params = Params.preset("full", device=args.device).model_copy(update={"n_seeds": args.seeds})
    started = time.perf_counter()
    result = run_study("ssm", params, args.out_dir)
    summary = summarize(result.metrics, time.perf_counter() - started, result.device_name)
    (args.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    sys.stdout.write(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
