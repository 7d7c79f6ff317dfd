"""RBF kernel, log-scale hyperparameters and the exact (Cholesky) objective.

Hyperparameters live in one unconstrained vector ``theta`` = [log lengthscale (1 or d entries),
log outputscale, log(noise - NOISE_FLOOR)], so Adam can step all arms identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Same role as GPyTorch's GreaterThan(1e-4) noise constraint: without a floor the truncated
# estimators can drive the noise to zero, after which not even the exact baseline can be evaluated.
NOISE_FLOOR = 1e-4


@dataclass(frozen=True)
class Hyperparameters:
    """Natural-scale GP hyperparameters (outputscale and noise are variances, like GPyTorch)."""

    lengthscale: tuple[float, ...]
    outputscale: float
    noise: float

    def as_dict(self) -> dict[str, float | list[float]]:
        lengthscale: float | list[float] = (
            self.lengthscale[0] if len(self.lengthscale) == 1 else list(self.lengthscale)
        )
        return {"lengthscale": lengthscale, "outputscale": self.outputscale, "noise": self.noise}

    @property
    def mean_lengthscale(self) -> float:
        """Geometric mean over ARD dimensions, the scalar that recovery errors are reported on."""
        return math.exp(sum(math.log(value) for value in self.lengthscale) / len(self.lengthscale))


def pack(hyper: Hyperparameters, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """The unconstrained vector for ``hyper``."""
    if hyper.noise <= NOISE_FLOOR:
        raise ValueError(f"noise: {hyper.noise} must exceed the floor {NOISE_FLOOR}")
    values = [math.log(v) for v in hyper.lengthscale]
    values += [math.log(hyper.outputscale), math.log(hyper.noise - NOISE_FLOOR)]
    return torch.tensor(values, dtype=dtype, device=device)


def lengthscales(theta: Tensor) -> Tensor:
    return theta[:-2].exp()


def outputscale(theta: Tensor) -> Tensor:
    return theta[-2].exp()


def noise(theta: Tensor) -> Tensor:
    return theta[-1].exp() + NOISE_FLOOR


def unpack(theta: Tensor) -> Hyperparameters:
    """Natural-scale values of ``theta`` (detached, as plain floats)."""
    values = theta.detach().cpu()
    return Hyperparameters(
        lengthscale=tuple(float(v) for v in lengthscales(values)),
        outputscale=float(outputscale(values)),
        noise=float(noise(values)),
    )


def rbf(x1: Tensor, x2: Tensor, lengthscale: Tensor) -> Tensor:
    """exp(-|x1 - x2|^2 / (2 l^2)) via the Gram identity: cdist is several times slower here."""
    a = x1 / lengthscale
    b = x2 / lengthscale
    squared = (a * a).sum(-1)[:, None] + (b * b).sum(-1)[None, :] - 2.0 * (a @ b.T)
    return torch.exp(-0.5 * squared.clamp_min(0.0))


def covariance_matrix(x: Tensor, theta: Tensor) -> Tensor:
    """s^2 k_l(X, X) without the noise, differentiable in ``theta``."""
    return outputscale(theta) * rbf(x, x, lengthscales(theta))


def kernel_matrix(x: Tensor, theta: Tensor) -> Tensor:
    """K_hat = s^2 k_l(X, X) + sigma^2 I, differentiable in ``theta``."""
    covariance = covariance_matrix(x, theta)
    # diagonal_scatter instead of "+ noise * eye": a dense identity is one more n x n buffer.
    return covariance.diagonal_scatter(covariance.diagonal() + noise(theta))


def exact_terms(kernel: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(y^T K^-1 y, log|K|) by Cholesky; differentiable."""
    factor = torch.linalg.cholesky(kernel)
    solution = torch.cholesky_solve(y[:, None], factor)[:, 0]
    return y @ solution, 2.0 * factor.diagonal().log().sum()


def negative_log_likelihood(quadratic: Tensor, logdet: Tensor, n: int) -> Tensor:
    """Per-point negative log marginal likelihood from its two terms."""
    return (0.5 * quadratic + 0.5 * logdet) / n + 0.5 * math.log(2.0 * math.pi)


def exact_nll(x: Tensor, y: Tensor, theta: Tensor) -> Tensor:
    """The exact per-point NLL, the yardstick every arm's trajectory is evaluated with."""
    quadratic, logdet = exact_terms(kernel_matrix(x, theta), y)
    return negative_log_likelihood(quadratic, logdet, x.shape[0])


def predict(
    x_train: Tensor, y_train: Tensor, x_test: Tensor, theta: Tensor
) -> tuple[Tensor, Tensor]:
    """Exact posterior predictive mean and variance of y (noise included) at ``x_test``."""
    with torch.no_grad():
        factor = torch.linalg.cholesky(kernel_matrix(x_train, theta))
        cross = outputscale(theta) * rbf(x_test, x_train, lengthscales(theta))
        mean = cross @ torch.cholesky_solve(y_train[:, None], factor)[:, 0]
        whitened = torch.linalg.solve_triangular(factor, cross.T, upper=False)
        variance = outputscale(theta) + noise(theta) - (whitened * whitened).sum(0)
    return mean, variance.clamp_min(NOISE_FLOOR)


def gaussian_nll(y: Tensor, mean: Tensor, variance: Tensor) -> float:
    """Mean per-point negative log predictive density."""
    per_point = 0.5 * (torch.log(2.0 * math.pi * variance) + (y - mean) ** 2 / variance)
    return float(per_point.mean())
