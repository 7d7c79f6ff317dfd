"""Experiment 4: wall time of one optimizer step against n, and where RR-CG overtakes Cholesky."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from analysis.studies.gp.data import smooth_regression
from analysis.studies.gp.estimators import Arm, EstimatorSettings, surrogate
from analysis.studies.gp.kernels import Hyperparameters, pack

logger = logging.getLogger(__name__)


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step_seconds(
    arm: Arm,
    n: int,
    dims: int,
    hyper: Hyperparameters,
    estimators: EstimatorSettings,
    steps: int,
    generator: torch.Generator,
    device: str,
) -> dict[str, Any]:
    """Median seconds of one Adam step (estimate, backward, update) over ``steps`` steps."""
    x, y = smooth_regression(n, dims, hyper.noise**0.5, generator, device)
    theta = pack(hyper, torch.float64, device).requires_grad_(True)
    optimizer = torch.optim.Adam([theta], lr=0.01)
    durations: list[float] = []
    costs: list[float] = []
    for _ in range(steps):
        _synchronize(device)
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, cost = surrogate(arm, x, y, theta, estimators, generator)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        _synchronize(device)
        durations.append(time.perf_counter() - started)
        costs.append(cost)
    return {
        "seconds_per_step": statistics.median(durations),
        "seconds_all": durations,
        "mean_iterations": sum(costs) / len(costs),
    }


def timing(
    sizes: Sequence[int],
    arms: Sequence[Arm],
    dims: int,
    hyper: Hyperparameters,
    estimators: EstimatorSettings,
    steps: int,
    seed: int,
    device: str,
    tick: Callable[[str], None],
) -> dict[str, Any]:
    """Step times per n and arm, plus the smallest n at which RR-CG beats Cholesky."""
    generator = torch.Generator().manual_seed(seed)
    for arm in arms:  # first calls pay for allocator and BLAS warm-up; keep that out of the table
        step_seconds(arm, min(sizes), dims, hyper, estimators, 1, generator, device)
    table: dict[str, dict[str, Any]] = {}
    for n in sizes:
        row: dict[str, Any] = {}
        for arm in arms:
            try:
                row[arm] = step_seconds(arm, n, dims, hyper, estimators, steps, generator, device)
            except torch.OutOfMemoryError:
                logger.warning("timing: %s at n=%d ran out of memory", arm, n)
                row[arm] = {"seconds_per_step": None, "error": "out of memory"}
            if device == "cuda":
                torch.cuda.empty_cache()
        table[str(n)] = row
        seconds = ", ".join(f"{arm} {_format(row[arm]['seconds_per_step'])}" for arm in arms)
        tick(f"timing: n={n} ({seconds} s/step)")
    return {
        "sizes": list(sizes),
        "device": device,
        "per_n": table,
        "crossover_n": crossover(table, "rr_cg", "cholesky"),
    }


def _format(seconds: float | None) -> str:
    return "OOM" if seconds is None else f"{seconds:.3g}"


def crossover(table: dict[str, dict[str, Any]], fast: str, slow: str) -> int | None:
    """Smallest n from which ``fast`` stays quicker per step than ``slow`` (None if never)."""
    answer: int | None = None
    for n_text in sorted(table, key=int):
        row = table[n_text]
        fast_seconds = row.get(fast, {}).get("seconds_per_step")
        slow_seconds = row.get(slow, {}).get("seconds_per_step")
        slow_failed = slow_seconds is None and slow in row
        if fast_seconds is not None and (
            slow_failed or (slow_seconds is not None and fast_seconds < slow_seconds)
        ):
            answer = answer if answer is not None else int(n_text)
        else:
            answer = None
    return answer
