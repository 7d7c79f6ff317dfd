"""The five ways to estimate the GP objective and its gradient: Cholesky, CG, RR-CG, RFF, RR-RFF.

Every random draw comes from one CPU ``torch.Generator`` and is then moved to the device, so a
seed gives the same probes, truncations and features on every device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from analysis.studies.gp.kernels import (
    covariance_matrix,
    lengthscales,
    negative_log_likelihood,
    noise,
    outputscale,
)
from analysis.studies.gp.solvers import (
    CGResult,
    Truncation,
    conjugate_gradients,
    quadrature_logdet,
)

Arm = Literal["cholesky", "cg", "rr_cg", "rff", "rr_rff"]
ARMS: tuple[Arm, ...] = ("cholesky", "cg", "rr_cg", "rff", "rr_rff")


@dataclass(frozen=True)
class EstimatorSettings:
    """Budgets of the approximate arms (compute-matched: E[J] of RR-CG ~ cg_iterations)."""

    probes: int
    cg_iterations: int
    rr_min_iterations: int
    rr_rate: float
    rff_features: int
    rr_rff_grid: tuple[int, ...]
    rr_rff_rate: float

    def truncation(self, n: int) -> Truncation:
        """p(J) on [J_min, n]: CG is exact by iteration n, so the series is finite."""
        return Truncation(self.rr_min_iterations, max(n, self.rr_min_iterations), self.rr_rate)

    def feature_truncation(self) -> Truncation:
        """p(K = k) over increments k = 1..m of the RFF grid."""
        return Truncation(1, len(self.rr_rff_grid) - 1, self.rr_rff_rate)

    def expected_cost(self, arm: Arm, n: int) -> float:
        """Expected CG iterations (CG arms), features (RFF arms) or n (Cholesky) per estimate."""
        if arm == "cholesky":
            return float(n)
        if arm == "cg":
            return float(min(self.cg_iterations, n))
        if arm == "rr_cg":
            return self.truncation(n).expected_value()
        if arm == "rff":
            return float(self.rff_features)
        feature_truncation = self.feature_truncation()
        chosen = torch.tensor(self.rr_rff_grid[1:], dtype=torch.float64)
        return float((feature_truncation.pmf() * chosen).sum())


def rademacher(n: int, count: int, generator: torch.Generator, like: Tensor) -> Tensor:
    signs = torch.randint(0, 2, (n, count), generator=generator, dtype=torch.int64) * 2 - 1
    return signs.to(dtype=like.dtype, device=like.device)


def standard_normal(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    draws = torch.randn(shape, generator=generator, dtype=torch.float64)
    return draws.to(dtype=like.dtype, device=like.device)


@dataclass(frozen=True)
class Solves:
    """CG output split into the pieces the objective needs."""

    left: Tensor  # (n,) estimate of K^-1 y
    right: Tensor  # (n,) independent estimate of K^-1 y (same as left for plain CG)
    probe_solutions: Tensor  # (n, t) estimates of K^-1 z
    probes: Tensor  # (n, t)
    result: CGResult
    draws: Tensor | None  # (columns,) truncations of RR-CG; None for plain CG


def solve(
    arm: Literal["cg", "rr_cg"],
    covariance: Tensor,
    noise_variance: Tensor,
    y: Tensor,
    settings: EstimatorSettings,
    generator: torch.Generator,
) -> Solves:
    """Batched (RR-)CG on [y, (y,) probes] with K_hat = covariance + noise I (no grad)."""
    n = y.shape[0]
    probes = rademacher(n, settings.probes, generator, y)
    covariance, noise_variance = covariance.detach(), noise_variance.detach()

    def matvec(vectors: Tensor) -> Tensor:
        return covariance @ vectors + noise_variance * vectors

    if arm == "cg":
        rhs = torch.cat([y[:, None], probes], 1)
        result = conjugate_gradients(matvec, rhs, min(settings.cg_iterations, n))
        solution = result.solution
        return Solves(solution[:, 0], solution[:, 0], solution[:, 1:], probes, result, None)
    # Two independent RR solves for y: u1^T dK u2 is unbiased only if u1 and u2 are independent.
    truncation = settings.truncation(n)
    rhs = torch.cat([y[:, None], y[:, None], probes], 1)
    draws = truncation.sample(rhs.shape[1], generator)
    weights = truncation.increment_weights(draws, y.dtype, y.device)
    result = conjugate_gradients(matvec, rhs, int(draws.max()), weights)
    solution = result.solution
    return Solves(solution[:, 0], solution[:, 1], solution[:, 2:], probes, result, draws)


def cg_objective_terms(
    arm: Literal["cg", "rr_cg"],
    covariance: Tensor,
    noise_variance: Tensor,
    y: Tensor,
    settings: EstimatorSettings,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor]:
    """(quadratic estimate, per-probe log-det estimates, probes) for the bias table."""
    solves = solve(arm, covariance, noise_variance, y, settings, generator)
    quadratic = y @ solves.left
    norms = (solves.probes * solves.probes).sum(0)
    if solves.draws is None:
        columns = torch.arange(1, 1 + settings.probes, device=y.device)
        logdets = quadrature_logdet(solves.result, solves.result.iterations, norms, columns)
        return quadratic, logdets, solves.probes
    # RR on the SLQ partial sums psi_j: weight each increment psi_j - psi_{j-1} by 1/P(J >= j).
    truncation = settings.truncation(y.shape[0])
    draws = solves.draws[2:]
    start = min(truncation.minimum, solves.result.iterations)
    weights = truncation.weights(solves.result.iterations).to(y.dtype).to(y.device)
    columns = torch.arange(2, 2 + settings.probes, device=y.device)
    estimate = quadrature_logdet(solves.result, start, norms, columns)
    previous = estimate.clone()
    for size in range(start + 1, solves.result.iterations + 1):
        # Only probes whose truncation reaches this size need its quadrature.
        live = (draws >= size).to(y.device)
        if not bool(live.any()):
            break
        current = quadrature_logdet(solves.result, size, norms[live], columns[live])
        estimate[live] += weights[size - 1] * (current - previous[live])
        previous[live] = current
    return quadratic, estimate, solves.probes


def cg_surrogate(
    arm: Literal["cg", "rr_cg"],
    x: Tensor,
    y: Tensor,
    theta: Tensor,
    settings: EstimatorSettings,
    generator: torch.Generator,
) -> tuple[Tensor, float]:
    """A scalar whose gradient is the (RR-)CG estimate of the per-point NLL gradient.

    d NLL = 1/2 tr(K^-1 dK) - 1/2 y^T K^-1 dK K^-1 y; with detached solves u1, u2 ~ K^-1 y and
    w_i ~ K^-1 z_i, the gradient of (mean_i w_i^T K z_i - u1^T K u2) / 2 is that estimate.
    """
    covariance = covariance_matrix(x, theta)
    noise_variance = noise(theta)
    solves = solve(arm, covariance, noise_variance, y, settings, generator)
    targets = torch.cat([solves.right[:, None], solves.probes], 1)
    products = covariance @ targets + noise_variance * targets
    trace = (solves.probe_solutions * products[:, 1:]).sum() / settings.probes
    quadratic = solves.left @ products[:, 0]
    iterations = (
        float(solves.result.iterations)
        if solves.draws is None
        else float(solves.draws.double().mean())
    )
    return 0.5 * (trace - quadratic) / y.shape[0], iterations


def cholesky_surrogate(x: Tensor, y: Tensor, theta: Tensor) -> Tensor:
    """A scalar whose gradient is the exact per-point NLL gradient, 1/2 tr((K^-1 - a a^T) dK).

    Same kernel-gradient path as the CG arms, only the solves are exact; cheaper than
    backpropagating through the Cholesky factorization itself.
    """
    covariance = covariance_matrix(x, theta)
    noise_variance = noise(theta)
    with torch.no_grad():
        kernel = covariance.diagonal_scatter(covariance.diagonal() + noise_variance)
        factor = torch.linalg.cholesky(kernel)
        solution = torch.cholesky_solve(y[:, None], factor)
        weights = torch.cholesky_inverse(factor) - solution @ solution.T
    fit = (weights * covariance).sum() + noise_variance * weights.diagonal().sum()
    return 0.5 * fit / y.shape[0]


def rff_features(x: Tensor, theta: Tensor, base_frequencies: Tensor) -> Tensor:
    """Phi with E[Phi Phi^T] = s^2 k(X, X): s / sqrt(D) [cos, sin](x^T w), w = eps / l."""
    projections = x @ (base_frequencies / lengthscales(theta)).T
    scale = torch.sqrt(outputscale(theta) / base_frequencies.shape[0])
    return scale * torch.cat([torch.cos(projections), torch.sin(projections)], 1)


def rff_terms(
    x: Tensor, y: Tensor, theta: Tensor, base_frequencies: Tensor
) -> tuple[Tensor, Tensor]:
    """Exact (y^T K_rff^-1 y, log|K_rff|) for K_rff = Phi Phi^T + sigma^2 I; differentiable."""
    n = x.shape[0]
    features = rff_features(x, theta, base_frequencies)
    noise_variance = noise(theta)
    width = features.shape[1]
    if width >= n:
        kernel = features @ features.T
        kernel = kernel.diagonal_scatter(kernel.diagonal() + noise_variance)
        factor = torch.linalg.cholesky(kernel)
        solution = torch.cholesky_solve(y[:, None], factor)[:, 0]
        return y @ solution, 2.0 * factor.diagonal().log().sum()
    # Woodbury and the determinant lemma keep the work at O(n D^2) when 2D < n.
    inner = features.T @ features
    inner = inner.diagonal_scatter(inner.diagonal() + noise_variance)
    factor = torch.linalg.cholesky(inner)
    projected = features.T @ y
    whitened = torch.linalg.solve_triangular(factor, projected[:, None], upper=False)[:, 0]
    quadratic = (y @ y - whitened @ whitened) / noise_variance
    logdet = (n - width) * torch.log(noise_variance) + 2.0 * factor.diagonal().log().sum()
    return quadratic, logdet


def rr_rff_terms(
    x: Tensor, y: Tensor, theta: Tensor, settings: EstimatorSettings, generator: torch.Generator
) -> tuple[Tensor, Tensor, int]:
    """Single-sample estimate psi(D_0) + (psi(D_K) - psi(D_K-1)) / p(K) of both terms.

    Features are nested (D_K's frequencies extend D_K-1's), so the difference is small and the
    estimator is unbiased for the D_max-feature model.
    """
    grid = settings.rr_rff_grid
    truncation = settings.feature_truncation()
    index = int(truncation.sample(1, generator)[0])
    probability = float(truncation.pmf()[index - 1])
    base = standard_normal((grid[index], x.shape[1]), generator, x)
    first = rff_terms(x, y, theta, base[: grid[0]])
    below = first if index == 1 else rff_terms(x, y, theta, base[: grid[index - 1]])
    above = rff_terms(x, y, theta, base)
    quadratic = first[0] + (above[0] - below[0]) / probability
    logdet = first[1] + (above[1] - below[1]) / probability
    return quadratic, logdet, grid[index]


def surrogate(
    arm: Arm,
    x: Tensor,
    y: Tensor,
    theta: Tensor,
    settings: EstimatorSettings,
    generator: torch.Generator,
) -> tuple[Tensor, float]:
    """(scalar with the arm's gradient estimate of the per-point NLL, cost of this estimate)."""
    n = x.shape[0]
    if arm == "cholesky":
        return cholesky_surrogate(x, y, theta), float(n)
    if arm in ("cg", "rr_cg"):
        return cg_surrogate(arm, x, y, theta, settings, generator)
    if arm == "rff":
        base = standard_normal((settings.rff_features, x.shape[1]), generator, x)
        quadratic, logdet = rff_terms(x, y, theta, base)
        return negative_log_likelihood(quadratic, logdet, n), float(settings.rff_features)
    quadratic, logdet, features = rr_rff_terms(x, y, theta, settings, generator)
    return negative_log_likelihood(quadratic, logdet, n), float(features)
