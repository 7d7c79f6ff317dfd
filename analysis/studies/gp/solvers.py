"""Batched conjugate gradients, Lanczos quadrature from the CG scalars, and Russian roulette.

Written here rather than taken from GPyTorch because GPyTorch's CG stops at a loose tolerance
(and falls back to Cholesky below 800 points), and it has no randomized-truncation variant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

try:
    import numpy as np
except ImportError:  # torch-only GPU boxes: fall back to torch's eigh
    np = None  # type: ignore[assignment]
from torch import Tensor

# Relative residual below which a column counts as solved. Only numerical convergence stops a
# column: the fixed-J arm really runs J iterations unless the answer is exact to ~1e-12.
CONVERGED = 1e-12


@dataclass(frozen=True)
class CGResult:
    """Weighted sum of CG increments, plus the scalars Lanczos needs."""

    solution: Tensor  # (n, m): sum_j weight[j] * (x_j - x_{j-1})
    alphas: Tensor  # (iterations, m) step sizes
    betas: Tensor  # (iterations, m) direction-update ratios
    steps: Tensor  # (m,) iterations each column took before it converged
    iterations: int  # iterations actually run for the batch


def conjugate_gradients(
    matvec: Callable[[Tensor], Tensor],
    rhs: Tensor,
    iterations: int,
    increment_weights: Tensor | None = None,
) -> CGResult:
    """Run CG from x0 = 0 on every column of ``rhs`` for ``iterations`` steps.

    ``increment_weights[j, i]`` multiplies column i's j-th increment; all ones gives plain CG,
    1/P(J >= j) (zero past the column's J) gives Russian-roulette CG.
    """
    columns = rhs.shape[1]
    if increment_weights is None:
        increment_weights = torch.ones(iterations, columns, dtype=rhs.dtype, device=rhs.device)
    if increment_weights.shape != (iterations, columns):
        raise ValueError(
            f"increment_weights: shape {tuple(increment_weights.shape)} "
            f"!= ({iterations}, {columns})"
        )
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    residual_sq = (residual * residual).sum(0)
    threshold = (CONVERGED**2) * residual_sq
    active = residual_sq > 0
    steps = torch.zeros(columns, dtype=torch.long, device=rhs.device)
    alphas = torch.zeros(iterations, columns, dtype=rhs.dtype, device=rhs.device)
    betas = torch.zeros_like(alphas)
    ran = 0
    for j in range(iterations):
        if not bool(active.any()):
            break
        ran = j + 1
        product = matvec(direction)
        curvature = (direction * product).sum(0)
        # Solved columns get alpha = 0 so they stay put instead of dividing by ~0.
        alpha = torch.where(active, residual_sq / torch.where(active, curvature, 1.0), 0.0)
        solution += (increment_weights[j] * alpha) * direction
        residual -= alpha * product
        new_residual_sq = (residual * residual).sum(0)
        beta = torch.where(active, new_residual_sq / torch.where(active, residual_sq, 1.0), 0.0)
        alphas[j], betas[j] = alpha, beta
        steps += active.long()
        direction = residual + beta * direction
        residual_sq = torch.where(active, new_residual_sq, residual_sq)
        active = active & (new_residual_sq > threshold)
    return CGResult(solution, alphas, betas, steps, ran)


def lanczos_tridiagonal(result: CGResult, size: int, columns: Tensor | None = None) -> Tensor:
    """Lanczos T_size for every column (m, size, size), recovered from the CG scalars.

    Columns that converged after s < size steps get T_s padded with an identity block that is
    decoupled from e1, so it adds log(1) = 0 to the quadrature. ``columns`` picks a subset.
    """
    alphas, betas, steps = result.alphas[:size].T, result.betas[:size].T, result.steps[:, None]
    if columns is not None:
        alphas, betas, steps = alphas[columns], betas[columns], steps[columns]
    index = torch.arange(size, device=alphas.device)[None, :]
    live = index < steps
    safe_alphas = torch.where(live, alphas, 1.0)
    previous = torch.cat([torch.zeros_like(alphas[:, :1]), betas[:, :-1] / safe_alphas[:, :-1]], 1)
    diagonal = torch.where(live, 1.0 / safe_alphas + previous, 1.0)
    coupled = index[:, :-1] + 1 < steps
    off_diagonal = torch.where(
        coupled, betas[:, :-1].clamp_min(0.0).sqrt() / safe_alphas[:, :-1], 0.0
    )
    return (
        torch.diag_embed(diagonal)
        + torch.diag_embed(off_diagonal, 1)
        + torch.diag_embed(off_diagonal, -1)
    )


def quadrature_logdet(
    result: CGResult, size: int, probe_norms_sq: Tensor, columns: Tensor | None = None
) -> Tensor:
    """Per-probe SLQ estimates |z|^2 e1^T log(T_size) e1 of log|K| (shape (m,)).

    With ``columns``, only those CG columns (``probe_norms_sq`` then lists their norms)."""
    tridiagonal = lanczos_tridiagonal(result, size, columns).detach().cpu()
    # NumPy on the CPU: these matrices are tiny, and torch's batched eigh is ~50x slower on a
    # busy 2-core machine (thread overhead) and launch-bound on a GPU.
    if np is not None:
        values, vectors = np.linalg.eigh(tridiagonal.numpy())
        eigenvalues, eigenvectors = torch.from_numpy(values), torch.from_numpy(vectors)
    else:
        eigenvalues, eigenvectors = torch.linalg.eigh(tridiagonal)
    weights = eigenvectors[:, 0, :] ** 2
    # Loss of orthogonality can push a Ritz value slightly below zero; the floor only guards log.
    estimates = (weights * eigenvalues.clamp_min(1e-300).log()).sum(-1)
    return probe_norms_sq * estimates.to(probe_norms_sq)


@dataclass(frozen=True)
class Truncation:
    """p(J = j) proportional to exp(-rate (j - minimum)) on [minimum, maximum]."""

    minimum: int
    maximum: int
    rate: float

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(
                f"truncation: need 1 <= minimum {self.minimum} <= maximum {self.maximum}"
            )
        if self.rate <= 0:
            raise ValueError(f"truncation: rate {self.rate} must be positive")

    def pmf(self) -> Tensor:
        """p(J = j) for j = minimum..maximum (float64, CPU)."""
        offsets = torch.arange(self.maximum - self.minimum + 1, dtype=torch.float64)
        unnormalized = torch.exp(-self.rate * offsets)
        return unnormalized / unnormalized.sum()

    def survival(self, upto: int) -> Tensor:
        """P(J >= j) for j = 1..upto, in closed form (1 up to the minimum, 0 past the maximum)."""
        j = torch.arange(1, upto + 1, dtype=torch.float64)
        offsets = (j - self.minimum).clamp_min(0.0)
        span = self.maximum + 1 - self.minimum
        tail = math.exp(-self.rate * span)
        survival = (torch.exp(-self.rate * offsets) - tail) / (1.0 - tail)
        return torch.where(j > self.maximum, 0.0, survival.clamp_min(0.0))

    def weights(self, upto: int) -> Tensor:
        """The Russian-roulette weights 1/P(J >= j) for j = 1..upto (not 1/P(J = j))."""
        survival = self.survival(upto)
        return torch.where(survival > 0, 1.0 / survival.clamp_min(1e-300), 0.0)

    def expected_value(self) -> float:
        values = torch.arange(self.minimum, self.maximum + 1, dtype=torch.float64)
        return float((self.pmf() * values).sum())

    def sample(self, count: int, generator: torch.Generator) -> Tensor:
        """``count`` independent draws of J (CPU long tensor)."""
        indices = torch.multinomial(self.pmf(), count, replacement=True, generator=generator)
        return indices + self.minimum

    def increment_weights(
        self, draws: Tensor, dtype: torch.dtype, device: torch.device | str
    ) -> Tensor:
        """(max draw, m): column i weights its j-th CG increment by 1/P(J >= j) up to draws[i]."""
        upto = int(draws.max())
        j = torch.arange(1, upto + 1)[:, None]
        mask = (j <= draws[None, :]).to(torch.float64)
        return (self.weights(upto)[:, None] * mask).to(dtype=dtype, device=device)


def russian_roulette_sum(terms: Tensor, truncation: Truncation, draw: int) -> Tensor:
    """Unbiased estimate of sum(terms) from the first ``draw`` terms (terms along dim 0)."""
    if draw > terms.shape[0]:
        raise ValueError(f"draw: {draw} exceeds the {terms.shape[0]} terms given")
    weights = truncation.weights(draw).to(dtype=terms.dtype, device=terms.device)
    shape = (draw,) + (1,) * (terms.dim() - 1)
    return (terms[:draw] * weights.reshape(shape)).sum(0)
