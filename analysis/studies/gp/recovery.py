"""Experiments 2 and 3: hyperparameter recovery on GP draws, and held-out test metrics."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from analysis.studies.gp.data import Split, diabetes, gp_draw, median_distance, split
from analysis.studies.gp.estimators import rff_features, standard_normal
from analysis.studies.gp.kernels import (
    Hyperparameters,
    exact_nll,
    gaussian_nll,
    noise,
    pack,
    predict,
    unpack,
)
from analysis.studies.gp.optimize import Fit, cholesky_optimum, fit
from analysis.studies.gp.params import Params

# GPyTorch-like starting point: unit outputscale, noise 0.1, lengthscale half the median
# pairwise distance. Every arm starts here.
INITIAL_OUTPUTSCALE = 1.0
INITIAL_NOISE = 0.1


def initial_theta(x: Tensor, params: Params) -> Tensor:
    lengthscale = 0.5 * median_distance(x)
    dimensions = x.shape[1] if params.ard else 1
    start = Hyperparameters((lengthscale,) * dimensions, INITIAL_OUTPUTSCALE, INITIAL_NOISE)
    return pack(start, torch.float64, x.device)


def _log_ratio(estimate: float, reference: float, power: float = 1.0) -> float:
    return power * math.log(estimate / reference)


def _fit_record(result: Fit, optimum: Hyperparameters) -> dict[str, float]:
    found = result.hyperparameters
    return {
        "lengthscale": found.mean_lengthscale,
        "noise": found.noise,
        "outputscale": found.outputscale,
        "exact_nll": result.final_exact_nll,
        # log(l_hat^2 / l^2) as in the paper's figure; > 0 means too long (underfitting).
        "log_lengthscale_sq_error": _log_ratio(found.mean_lengthscale, optimum.mean_lengthscale, 2),
        "log_noise_error": _log_ratio(found.noise, optimum.noise),
        "log_outputscale_error": _log_ratio(found.outputscale, optimum.outputscale),
        "mean_cost": result.mean_cost,
        "seconds": result.seconds,
    }


def recovery(params: Params, seeds: list[int], tick: Callable[[str], None]) -> dict[str, Any]:
    """Fit every arm on one GP draw per true lengthscale; errors against the Cholesky optimum."""
    estimators, fit_settings = params.estimator_settings(), params.fit_settings()
    optima: list[dict[str, float]] = []
    arms: dict[str, list[dict[str, float]]] = {arm: [] for arm in params.recovery_arms}
    trajectories: list[dict[str, Any]] = []
    for true_lengthscale, seed in zip(params.recovery_lengthscales, seeds, strict=True):
        generator = torch.Generator().manual_seed(seed)
        truth = Hyperparameters(
            (true_lengthscale,) * (params.dims if params.ard else 1),
            params.true_outputscale,
            params.true_noise,
        )
        x, y = gp_draw(params.recovery_n, params.dims, truth, generator, params.device)
        start = initial_theta(x, params)
        optimum_theta = cholesky_optimum(x, y, start)
        optimum = unpack(optimum_theta)
        with torch.no_grad():
            optimum_nll = float(exact_nll(x, y, optimum_theta))
        optima.append(
            {
                "true_lengthscale": true_lengthscale,
                "lengthscale": optimum.mean_lengthscale,
                "noise": optimum.noise,
                "outputscale": optimum.outputscale,
                "exact_nll": optimum_nll,
            }
        )
        curves: dict[str, Any] = {"true_lengthscale": true_lengthscale}
        for arm in params.recovery_arms:
            result = fit(arm, x, y, start, estimators, fit_settings, generator)
            arms[arm].append(_fit_record(result, optimum))
            curves[arm] = {"steps": result.steps, "exact_nll": result.exact_nll}
            tick(f"recovery: l={true_lengthscale} {arm}")
        trajectories.append(curves)
    return {
        "true_lengthscales": list(params.recovery_lengthscales),
        "cholesky_optimum": optima,
        "arms": {arm: _columns(records) for arm, records in arms.items()},
        "summary": {arm: _direction(records) for arm, records in arms.items()},
        "trajectories": trajectories,
    }


def _columns(records: list[dict[str, float]]) -> dict[str, list[float]]:
    """Per-arm lists aligned with ``true_lengthscales``."""
    return {key: [record[key] for record in records] for key in records[0]}


def _direction(records: list[dict[str, float]]) -> dict[str, Any]:
    """Mean log errors and their sign: the measured direction of each arm's bias."""
    summary: dict[str, Any] = {}
    for name, key in (
        ("lengthscale", "log_lengthscale_sq_error"),
        ("noise", "log_noise_error"),
        ("outputscale", "log_outputscale_error"),
    ):
        mean = sum(record[key] for record in records) / len(records)
        summary[f"mean_{key}"] = mean
        summary[f"{name}_direction"] = (
            "too high" if mean > 0.05 else "too low" if mean < -0.05 else "on target"
        )
    return summary


def _dataset(name: str, params: Params, generator: torch.Generator) -> Split:
    if name == "synthetic":
        truth = Hyperparameters(
            (params.bias_lengthscale,) * (params.dims if params.ard else 1),
            params.true_outputscale,
            params.true_noise,
        )
        x, y = gp_draw(params.test_synthetic_n, params.dims, truth, generator)
    else:
        x, y = diabetes()
    return split(x, y, params.test_fraction, generator, params.device)


def rff_predict(
    data: Split, theta: Tensor, frequencies: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The RFF model's own predictive (Bayesian linear regression on D fresh frequencies)."""
    with torch.no_grad():
        base = standard_normal((frequencies, data.x_train.shape[1]), generator, data.x_train)
        train_features = rff_features(data.x_train, theta, base)
        test_features = rff_features(data.x_test, theta, base)
        noise_variance = noise(theta)
        inner = train_features.T @ train_features
        inner = inner.diagonal_scatter(inner.diagonal() + noise_variance)
        factor = torch.linalg.cholesky(inner)
        weights = torch.cholesky_solve((train_features.T @ data.y_train)[:, None], factor)[:, 0]
        whitened = torch.linalg.solve_triangular(factor, test_features.T, upper=False)
        variance = noise_variance * (1.0 + (whitened * whitened).sum(0))
    return test_features @ weights, variance


def test_metrics(params: Params, seeds: list[int], tick: Callable[[str], None]) -> dict[str, Any]:
    """RMSE and NLL on a held-out split (standardized targets), per data set, arm and seed.

    Every arm is scored with the exact GP predictive at its own hyperparameters, which isolates
    what the estimator did to the hyperparameters; ``rff_own_predictive`` adds the RFF model's
    own predictive with the RFF arm's hyperparameters.
    """
    estimators, fit_settings = params.estimator_settings(), params.fit_settings()
    datasets: dict[str, dict[str, dict[str, Any]]] = {}
    for name in params.test_datasets:
        per_arm: dict[str, list[dict[str, float]]] = {}
        for seed in seeds:
            generator = torch.Generator().manual_seed(seed)
            data = _dataset(name, params, generator)
            start = initial_theta(data.x_train, params)
            for arm in params.test_arms:
                result = fit(
                    arm, data.x_train, data.y_train, start, estimators, fit_settings, generator
                )
                mean, variance = predict(data.x_train, data.y_train, data.x_test, result.theta)
                per_arm.setdefault(arm, []).append(_scores(seed, data.y_test, mean, variance))
                if arm == "rff":
                    own = rff_predict(data, result.theta, params.rff_features, generator)
                    per_arm.setdefault("rff_own_predictive", []).append(
                        _scores(seed, data.y_test, *own)
                    )
            tick(f"test: {name} seed {seed}")
        datasets[name] = {arm: _aggregate(rows) for arm, rows in per_arm.items()}
    return {"seeds": seeds, "datasets": datasets}


def _scores(seed: int, y: Tensor, mean: Tensor, variance: Tensor) -> dict[str, float]:
    rmse = float(torch.sqrt(((y - mean) ** 2).mean()))
    return {"seed": seed, "rmse": rmse, "nll": gaussian_nll(y, mean, variance)}


def _aggregate(rows: list[dict[str, float]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"per_seed": rows}
    for key in ("rmse", "nll"):
        values = torch.tensor([row[key] for row in rows], dtype=torch.float64)
        summary[f"{key}_mean"] = float(values.mean())
        summary[f"{key}_std"] = float(values.std()) if len(rows) > 1 else 0.0
    return summary
