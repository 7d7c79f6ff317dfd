"""Data sets: exact GP draws (known hyperparameters) and scikit-learn's bundled diabetes data."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from analysis.studies.gp.kernels import Hyperparameters, kernel_matrix, pack


@dataclass(frozen=True)
class Split:
    """Train/test tensors with targets standardized by the training statistics."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def gp_draw(
    n: int,
    dims: int,
    hyper: Hyperparameters,
    generator: torch.Generator,
    device: str = "cpu",
    half_width: float = 3.0,
) -> tuple[Tensor, Tensor]:
    """X ~ U[-w, w]^dims and y ~ N(0, s^2 k_l(X, X) + sigma^2 I), drawn exactly by Cholesky.

    w = 3 follows the paper's lengthscale-recovery toy problem (inputs on [-3, 3])."""
    unit = torch.rand(n, dims, generator=generator, dtype=torch.float64)
    x_cpu = half_width * (2.0 * unit - 1.0)
    standard = torch.randn(n, generator=generator, dtype=torch.float64)
    x = x_cpu.to(device)
    theta = pack(hyper, torch.float64, device)
    factor = torch.linalg.cholesky(kernel_matrix(x, theta))
    return x, factor @ standard.to(device)


def smooth_regression(
    n: int,
    dims: int,
    noise_std: float,
    generator: torch.Generator,
    device: str = "cpu",
    half_width: float = 3.0,
) -> tuple[Tensor, Tensor]:
    """A cheap stand-in for a GP draw at sizes where drawing one exactly costs more than the
    timing it feeds (the step time does not depend on the targets' distribution)."""
    x = half_width * (2.0 * torch.rand(n, dims, generator=generator, dtype=torch.float64) - 1.0)
    signal = torch.sin(3.0 * x).sum(1) / dims**0.5
    y = signal + noise_std * torch.randn(n, generator=generator, dtype=torch.float64)
    return x.to(device), y.to(device)


def diabetes() -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled diabetes regression set (442 x 10); no download involved."""
    from sklearn.datasets import load_diabetes  # optional: only this data set needs sklearn

    features, targets = load_diabetes(return_X_y=True)
    return torch.as_tensor(features, dtype=torch.float64), torch.as_tensor(
        targets, dtype=torch.float64
    )


def split(
    x: Tensor, y: Tensor, test_fraction: float, generator: torch.Generator, device: str = "cpu"
) -> Split:
    """Random split; inputs and targets standardized with the training part's statistics."""
    n = x.shape[0]
    order = torch.randperm(n, generator=generator)
    test_count = max(1, round(test_fraction * n))
    test, train = order[:test_count], order[test_count:]
    x_mean, x_std = x[train].mean(0), x[train].std(0).clamp_min(1e-12)
    y_mean, y_std = y[train].mean(), y[train].std()

    def prepare(values: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        return ((values - mean) / std).to(device)

    return Split(
        x_train=prepare(x[train], x_mean, x_std),
        y_train=prepare(y[train], y_mean, y_std),
        x_test=prepare(x[test], x_mean, x_std),
        y_test=prepare(y[test], y_mean, y_std),
    )


def median_distance(x: Tensor, sample: int = 500) -> float:
    """Median pairwise distance of (up to ``sample``) inputs: the arms' shared initial lengthscale
    scale, so no arm starts closer to its answer than another."""
    subset = x[:sample]
    distances = torch.cdist(subset, subset)
    upper = distances[torch.triu_indices(len(subset), len(subset), 1, device=x.device).unbind()]
    return float(upper.median())
