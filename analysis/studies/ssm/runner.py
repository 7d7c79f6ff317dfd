"""``run``: all six experiments, figures, and the metrics ``result.json`` is built from."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.studies.base import Progress, StudyResult
from analysis.studies.ssm import figures
from analysis.studies.ssm.depth import depth_experiment
from analysis.studies.ssm.fixed_a import (
    INPUT_KINDS,
    causal_pitfall,
    closed_form_curve,
    dln_equivalence,
    fixed_a_one,
    make_problem,
)
from analysis.studies.ssm.latent import latent_sweep
from analysis.studies.ssm.learn_a import learn_a
from analysis.studies.ssm.mimo import mimo_experiment
from analysis.studies.ssm.params import Params

logger = logging.getLogger(__name__)

# each experiment draws from its own stream, so changing one never reshuffles another
SEED_OFFSETS = {
    "fixed_a": 0,
    "dln": 1000,
    "causal": 2000,
    "learn_a": 3000,
    "latent": 4000,
    "depth": 5000,
    "mimo": 6000,
}


@contextmanager
def few_threads(device: str) -> Iterator[None]:
    """One intra-op thread on CPU for the duration of the study.

    Every tensor here is small (≤ 256 x 128 in the quick preset); on a shared 2-core machine the
    thread pool's fan-out made an FFT 60x slower than running it on one core.
    """
    if device != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def generator(params: Params, experiment: str, seed_index: int = 0) -> torch.Generator:
    seed = params.seed + seed_index + SEED_OFFSETS[experiment]
    return torch.Generator(device=params.device).manual_seed(seed)


def run(params: Params, progress: Progress, out_dir: Path) -> StudyResult:
    """Run the study; figures go to ``out_dir``, metrics into the returned result."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(params.seed)
    total = params.n_seeds + 6 + len(params.depth_layers)
    done = 0
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def advance(message: str, count: int = 1) -> None:
        nonlocal done, clock
        done += count
        now = time.perf_counter()
        timings[message] = round(now - clock, 3)
        clock = now
        logger.info("ssm: %s (%d/%d)", message, done, total)
        progress(done, total, message)

    with few_threads(params.device):
        # 1. fixed a, every seed and both input spectra
        per_seed: list[dict[str, Any]] = []
        curves: list[figures.FixedACurves] = []
        for index in range(params.n_seeds):
            gen = generator(params, "fixed_a", index)
            entry: dict[str, Any] = {"seed": params.seed + index}
            for kind in INPUT_KINDS:
                stats, trace = fixed_a_one(params, kind, gen)
                entry[kind] = stats
                if index == 0:
                    theory = closed_form_curve(trace, stats["sigma"], stats["eta"])
                    curves.append(figures.FixedACurves(kind, trace, theory, stats["w_star"]))
            per_seed.append(entry)
            advance(f"fixed a, seed {index + 1}/{params.n_seeds}")
        fixed_a = summarize_fixed_a(per_seed)
        fixed_a["causal_pitfall"] = causal_pitfall(params, generator(params, "causal"))
        advance("circular vs causal convolution")

        # 2. the matched two-layer network
        dln_stats, ssm_trace, dln_trace = dln_equivalence(params, generator(params, "dln"))
        advance("deep linear network equivalence")

        # 3. learning a
        learned = learn_a(params, generator(params, "learn_a"))
        advance("learning a")

        # 4. latent sweep (reduced equations over all seeds' data)
        gen = generator(params, "latent")
        problems = [
            make_problem(params, "white", generator(params, "latent", i), params.student_a)
            for i in range(params.n_seeds)
        ]
        sweep = latent_sweep(params, problems, gen)
        advance("latent sweep")

        # 5. depth
        depth, depth_curves = depth_experiment(params, generator(params, "depth"))
        advance("depth", len(params.depth_layers))

        # 6. MIMO complex-diagonal SSM
        mimo, mimo_curves = mimo_experiment(params, generator(params, "mimo"))
        advance("mimo")

        figure_names = [
            figures.fixed_a_figure(
                curves, ssm_trace, dln_trace, dln_stats["w_star"], out_dir / "fixed_a.png"
            ),
            figures.learn_a_figure(learned, out_dir / "learn_a.png"),
            figures.latent_figure(sweep, out_dir / "latent_sweep.png"),
            figures.depth_figure(depth_curves, out_dir / "depth_modes.png"),
            figures.mimo_figure(mimo_curves, out_dir / "mimo_modes.png"),
        ]
        advance("figures")

    metrics: dict[str, Any] = {
        "fixed_a": fixed_a,
        "dln_equivalence": dln_stats,
        "learn_a": learned.summary,
        "latent_sweep": sweep,
        "depth": depth,
        "mimo": mimo,
        "seeds": {
            "base": params.seed,
            "data_seeds": [params.seed + i for i in range(params.n_seeds)],
            "stream_offsets": SEED_OFFSETS,
        },
        "timings_s": timings,
    }
    return StudyResult(
        study="ssm", params=params.model_dump(), metrics=metrics, figures=figure_names
    )


def summarize_fixed_a(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Headline numbers: worst error over seeds and inputs; the rate of seed 0's white noise."""
    runs = [entry[kind] for entry in per_seed for kind in INPUT_KINDS]
    rate_errors = [abs(r["fitted_rate"] / r["predicted_rate"] - 1.0) for r in runs]
    first = per_seed[0]
    return {
        "max_rel_error": float(max(r["max_rel_error"] for r in runs)),
        "fitted_rate": first["white"]["fitted_rate"],
        "predicted_rate": first["white"]["predicted_rate"],
        "rate_units": "per unit of t/τ (so 2η is the prediction)",
        "max_rate_rel_error": float(max(rate_errors)),
        "max_rel_error_vs_reduced_gd": float(max(r["max_rel_error_vs_reduced_gd"] for r in runs)),
        "by_input": {kind: first[kind] for kind in INPUT_KINDS},
        "per_seed_max_rel_error": [
            float(np.max([entry[kind]["max_rel_error"] for kind in INPUT_KINDS]))
            for entry in per_seed
        ],
    }
