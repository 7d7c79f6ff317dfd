"""Adam on log-hyperparameters, identical for every arm; trajectories scored by the exact NLL."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from analysis.studies.gp.estimators import Arm, EstimatorSettings, surrogate
from analysis.studies.gp.kernels import Hyperparameters, exact_nll, unpack


@dataclass(frozen=True)
class FitSettings:
    steps: int
    learning_rate: float
    record_every: int
    # Stochastic arms end on a noisy iterate; averaging the last steps' log-hyperparameters
    # (for every arm alike) reports where they settle rather than where the last draw threw them.
    tail_fraction: float = 0.0


@dataclass
class Fit:
    """One arm's optimization: final hyperparameters and its exact-NLL trajectory."""

    arm: Arm
    theta: Tensor
    steps: list[int] = field(default_factory=list)
    exact_nll: list[float] = field(default_factory=list)
    mean_cost: float = 0.0
    seconds: float = 0.0

    @property
    def hyperparameters(self) -> Hyperparameters:
        return unpack(self.theta)

    @property
    def final_exact_nll(self) -> float:
        return self.exact_nll[-1]


def fit(
    arm: Arm,
    x: Tensor,
    y: Tensor,
    initial_theta: Tensor,
    estimators: EstimatorSettings,
    settings: FitSettings,
    generator: torch.Generator,
) -> Fit:
    """Run ``settings.steps`` Adam steps on the arm's gradient estimate from ``initial_theta``."""
    theta = initial_theta.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([theta], lr=settings.learning_rate)
    result = Fit(arm=arm, theta=theta)
    total_cost = 0.0
    tail_start = settings.steps - max(1, round(settings.tail_fraction * settings.steps))
    tail_sum = torch.zeros_like(theta.detach())
    started = time.perf_counter()
    for step in range(settings.steps):
        if step % settings.record_every == 0:
            _record(result, step, x, y, theta)
        optimizer.zero_grad(set_to_none=True)
        loss, cost = surrogate(arm, x, y, theta, estimators, generator)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        total_cost += cost
        if step >= tail_start:
            tail_sum += theta.detach()
    result.seconds = time.perf_counter() - started
    result.theta = tail_sum / (settings.steps - tail_start)
    _record(result, settings.steps, x, y, result.theta)
    result.mean_cost = total_cost / max(settings.steps, 1)
    return result


def _record(result: Fit, step: int, x: Tensor, y: Tensor, theta: Tensor) -> None:
    with torch.no_grad():
        value = exact_nll(x, y, theta)
    result.steps.append(step)
    result.exact_nll.append(float(value))


def cholesky_optimum(
    x: Tensor, y: Tensor, initial_theta: Tensor, max_iterations: int = 200
) -> Tensor:
    """The exact-NLL optimum by L-BFGS: the reference every arm's error is measured against."""
    theta = initial_theta.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=max_iterations,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = exact_nll(x, y, theta)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return theta.detach()
