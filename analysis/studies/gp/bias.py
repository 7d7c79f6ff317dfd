"""Experiment 1: bias of each estimator of the NLL's two terms at fixed (true) hyperparameters."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from analysis.studies.gp.data import gp_draw
from analysis.studies.gp.estimators import (
    EstimatorSettings,
    cg_objective_terms,
    rff_terms,
    rr_rff_terms,
    standard_normal,
)
from analysis.studies.gp.kernels import (
    Hyperparameters,
    covariance_matrix,
    exact_terms,
    kernel_matrix,
    noise,
    pack,
)
from analysis.studies.gp.params import Params

Row = dict[str, Any]


def _summary(values: list[float], exact: float) -> dict[str, float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    mean = float(tensor.mean())
    standard_error = float(tensor.std() / math.sqrt(len(values)))
    return {"mean": mean, "bias": mean - exact, "standard_error": standard_error}


def _row(
    estimator: str,
    budget: float,
    quadratics: list[float],
    logdets: list[float],
    paired: list[float] | None,
    exact: tuple[float, float],
) -> Row:
    quadratic = _summary(quadratics, exact[0])
    logdet = _summary(logdets, exact[1])
    row: Row = {
        "estimator": estimator,
        "budget": budget,
        "repeats": len(quadratics),
        "quadratic_mean": quadratic["mean"],
        "quadratic_bias": quadratic["bias"],
        "quadratic_se": quadratic["standard_error"],
        "logdet_mean": logdet["mean"],
        "logdet_bias": logdet["bias"],
        "logdet_se": logdet["standard_error"],
    }
    if paired is not None:
        # Probe noise dwarfs truncation bias at large J; comparing each probe's estimate with
        # its own exact z^T log(K) z (mean exactly log|K|) leaves only the truncation error.
        paired_summary = _summary(paired, 0.0)
        row["logdet_paired_bias"] = paired_summary["mean"]
        row["logdet_paired_se"] = paired_summary["standard_error"]
    return row


def bias_table(
    params: Params, generator: torch.Generator, tick: Callable[[str], None]
) -> dict[str, Any]:
    """Rows per estimator and budget: mean, bias and standard error of y^T K^-1 y and log|K|."""
    device = params.device
    truth = Hyperparameters(
        lengthscale=(params.bias_lengthscale,) * (params.dims if params.ard else 1),
        outputscale=params.true_outputscale,
        noise=params.true_noise,
    )
    x, y = gp_draw(params.bias_n, params.dims, truth, generator, device)
    theta = pack(truth, torch.float64, device)
    with torch.no_grad():
        kernel = kernel_matrix(x, theta)
        quadratic, logdet = exact_terms(kernel, y)
        eigenvalues, eigenvectors = torch.linalg.eigh(kernel)
        log_kernel = (eigenvectors * eigenvalues.log()) @ eigenvectors.T
        covariance, noise_variance = covariance_matrix(x, theta), noise(theta)
    exact = (float(quadratic), float(logdet))
    settings = params.estimator_settings()
    rows: list[Row] = []

    def probe_exact(probes: Tensor) -> Tensor:
        exact_forms: Tensor = (probes * (log_kernel @ probes)).sum(0)
        return exact_forms

    def cg_rows(
        arm: str, estimator_settings: EstimatorSettings, repeats: int, budget: float
    ) -> None:
        quadratics, logdets, paired = [], [], []
        for _ in range(repeats):
            with torch.no_grad():
                terms = cg_objective_terms(
                    "cg" if arm == "cg" else "rr_cg",
                    covariance,
                    noise_variance,
                    y,
                    estimator_settings,
                    generator,
                )
            quadratics.append(float(terms[0]))
            logdets.append(float(terms[1].mean()))
            paired.append(float((terms[1] - probe_exact(terms[2])).mean()))
        rows.append(_row(arm, budget, quadratics, logdets, paired, exact))

    for iterations in params.bias_cg_iterations:
        fixed = replace(settings, cg_iterations=iterations)
        cg_rows("cg", fixed, params.bias_repeats, float(iterations))
        tick(f"bias: CG J={iterations}")
    cg_rows("rr_cg", settings, params.bias_rr_repeats, settings.expected_cost("rr_cg", len(y)))
    tick("bias: RR-CG")

    for features in params.bias_rff_features:
        quadratics, logdets = [], []
        for _ in range(params.bias_repeats):
            with torch.no_grad():
                base = standard_normal((features, params.dims), generator, x)
                rff_quadratic, rff_logdet = rff_terms(x, y, theta, base)
            quadratics.append(float(rff_quadratic))
            logdets.append(float(rff_logdet))
        rows.append(_row("rff", float(features), quadratics, logdets, None, exact))
        tick(f"bias: RFF D={features}")
    quadratics, logdets = [], []
    for _ in range(params.bias_rr_repeats):
        with torch.no_grad():
            rr_quadratic, rr_logdet, _features = rr_rff_terms(x, y, theta, settings, generator)
        quadratics.append(float(rr_quadratic))
        logdets.append(float(rr_logdet))
    rr_rff_budget = settings.expected_cost("rr_rff", len(y))
    rows.append(_row("rr_rff", rr_rff_budget, quadratics, logdets, None, exact))
    tick("bias: RR-RFF")
    return {
        "n": params.bias_n,
        "hyperparameters": truth.as_dict(),
        "exact_quadratic": exact[0],
        "exact_logdet": exact[1],
        "rows": rows,
    }
