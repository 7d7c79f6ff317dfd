"""The GP study's entry point: runs the four experiments and assembles the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from analysis.studies.base import Progress, StudyResult, describe_device
from analysis.studies.gp.bias import bias_table
from analysis.studies.gp.estimators import ARMS
from analysis.studies.gp.kernels import Hyperparameters
from analysis.studies.gp.params import Params
from analysis.studies.gp.recovery import recovery, test_metrics
from analysis.studies.gp.timing import timing

COST_UNITS = {
    "cholesky": "n (dense factorization)",
    "cg": "CG iterations",
    "rr_cg": "CG iterations (expected)",
    "rff": "random frequencies",
    "rr_rff": "random frequencies (expected)",
}


def derived_seeds(params: Params) -> dict[str, Any]:
    """Every generator's seed, derived from ``params.seed`` and recorded with the result."""
    base = 1000 * params.seed
    return {
        "study": params.seed,
        "bias": base + 1,
        "recovery": [base + 100 + index for index in range(len(params.recovery_lengthscales))],
        "test": [base + 200 + seed for seed in params.test_seeds],
        "timing": base + 3,
    }


def expected_iterations(params: Params, recovery_result: dict[str, Any]) -> dict[str, Any]:
    """Per arm: the budget it was given (compute-matched) and what it used on average."""
    settings = params.estimator_settings()
    table: dict[str, Any] = {}
    for arm in ARMS:
        measured = recovery_result["arms"].get(arm, {}).get("mean_cost")
        table[arm] = {
            "expected": settings.expected_cost(arm, params.recovery_n),
            "unit": COST_UNITS[arm],
            "measured_mean_in_recovery": (sum(measured) / len(measured)) if measured else None,
        }
    table["rr_cg"]["truncation"] = {
        "minimum": params.rr_min_iterations,
        "rate": params.rr_rate,
        "maximum": "n",
    }
    return table


def claims(metrics: dict[str, Any]) -> dict[str, bool]:
    """The issue's expected shapes, checked on this run's numbers (never assumed)."""
    rows = metrics["bias_table"]["rows"]
    cg_rows = [row for row in rows if row["estimator"] == "cg"]
    rff_rows = [row for row in rows if row["estimator"] == "rff"]
    rr_cg = next(row for row in rows if row["estimator"] == "rr_cg")
    arms = metrics["recovery"]["arms"]

    def mean_error(arm: str) -> float:
        errors = arms[arm]["log_lengthscale_sq_error"]
        return float(sum(errors) / len(errors))

    def mean_abs_error(arm: str) -> float:
        errors = arms[arm]["log_lengthscale_sq_error"]
        return float(sum(abs(error) for error in errors) / len(errors))

    shapes = {
        "cg_quadratic_underestimates": all(row["quadratic_bias"] < 0 for row in cg_rows),
        "cg_quadratic_bias_shrinks_with_j": _shrinks(cg_rows, "quadratic_bias"),
        "cg_logdet_overestimates": all(row["logdet_paired_bias"] > 0 for row in cg_rows[:-1]),
        "cg_logdet_bias_shrinks_with_j": _shrinks(cg_rows, "logdet_paired_bias"),
        "rff_quadratic_overestimates": all(row["quadratic_bias"] > 0 for row in rff_rows),
        "rff_logdet_underestimates": all(row["logdet_bias"] < 0 for row in rff_rows),
        "rff_bias_shrinks_with_d": _shrinks(rff_rows, "logdet_bias"),
        "rr_cg_quadratic_within_3se": abs(rr_cg["quadratic_bias"]) < 3 * rr_cg["quadratic_se"],
        "rr_cg_logdet_within_3se": abs(rr_cg["logdet_paired_bias"]) < 3 * rr_cg["logdet_paired_se"],
    }
    if {"cg", "cholesky", "rr_cg"} <= set(arms):
        shapes["cg_lengthscale_longer_than_cholesky"] = all(
            cg > chol
            for cg, chol in zip(
                arms["cg"]["lengthscale"], arms["cholesky"]["lengthscale"], strict=True
            )
        )
        shapes["rr_cg_closer_to_optimum_than_cg"] = mean_abs_error("rr_cg") < mean_abs_error("cg")
    if "rff" in arms:
        shapes["rff_lengthscale_too_short"] = mean_error("rff") < 0
    return shapes


def _shrinks(rows: list[dict[str, Any]], key: str) -> bool:
    """|bias| at the largest budget is below |bias| at the smallest."""
    return bool(abs(rows[-1][key]) < abs(rows[0][key]))


def run(params: Params, progress: Progress, out_dir: Path) -> StudyResult:
    """Run the bias, recovery, test-metric and timing experiments; save figures to ``out_dir``."""
    torch.manual_seed(params.seed)
    seeds = derived_seeds(params)
    total = (
        len(params.bias_cg_iterations)
        + len(params.bias_rff_features)
        + 2
        + len(params.recovery_lengthscales) * len(params.recovery_arms)
        + len(params.test_datasets) * len(params.test_seeds)
        + len(params.timing_sizes)
        + 1
    )
    done = 0

    def tick(message: str) -> None:
        nonlocal done
        done += 1
        progress(done, total, message)

    progress(0, total, "gp: starting")
    metrics: dict[str, Any] = {"seeds": seeds}
    metrics["bias_table"] = bias_table(params, torch.Generator().manual_seed(seeds["bias"]), tick)
    metrics["recovery"] = recovery(params, seeds["recovery"], tick)
    metrics["test_metrics"] = test_metrics(params, seeds["test"], tick)
    timing_hyper = Hyperparameters(
        (params.bias_lengthscale,), params.true_outputscale, params.true_noise
    )
    metrics["timing"] = timing(
        params.timing_sizes,
        params.timing_arms,
        params.dims,
        timing_hyper,
        params.estimator_settings(),
        params.timing_steps,
        seeds["timing"],
        params.device,
        tick,
    )
    metrics["expected_iterations"] = expected_iterations(params, metrics["recovery"])
    metrics["claims"] = claims(metrics)
    from analysis.studies.gp import figures  # matplotlib only once there is something to draw

    out_dir.mkdir(parents=True, exist_ok=True)
    saved = [
        figures.bias_figure(metrics["bias_table"], out_dir),
        figures.recovery_figure(metrics["recovery"], out_dir),
        figures.test_figure(metrics["test_metrics"], out_dir),
        figures.timing_figure(metrics["timing"], out_dir, describe_device(params.device)),
    ]
    tick("figures")
    return StudyResult(
        study="gp", params=params.model_dump(mode="json"), metrics=metrics, figures=saved
    )
