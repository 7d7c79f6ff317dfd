"""Experiment 4: convergence time against the number ``N`` of latent units sharing ``a``.

The sweep integrates the reduced equations ``b ← b + dt·g·c·e, c ← c + dt·g·b·e`` with
``e = η - σ w`` and ``w = g Σ c_n b_n`` (GD on the exact quadratic loss; ``dt`` in units of ``τ``),
compares with the exact quadrature of :func:`theory.latent_t_level`, and spot-checks a few sizes
with autograd on the actual convolution. ``g = 1`` for independent units; ``g = N`` for one
``(b, c)`` pair shared by all units — the only setting found here where ``1/N²`` appears.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from analysis.studies.ssm.fixed_a import Problem
from analysis.studies.ssm.params import Params
from analysis.studies.ssm.spectral import DTYPE
from analysis.studies.ssm.theory import (
    crossing_time,
    latent_t_level,
    log_coefficient,
    loglog_slope,
)
from analysis.studies.ssm.training import gd_ssm, make_conv

LEVEL = 0.9
CHUNK = 64


@dataclass(frozen=True)
class Regime:
    """An initialization family: how one unit starts, as multiples of ``√w*``."""

    name: str
    tied: bool
    balanced: bool
    scale2: float  # per-factor scale², in units of w* (for balanced: ε²·N_max/w*)


def regimes(params: Params) -> list[Regime]:
    return [
        Regime(
            "small_balanced", tied=False, balanced=True, scale2=params.latent_small_init_fraction
        ),
        Regime("linear", tied=False, balanced=False, scale2=params.latent_linear_scale),
        Regime("small_one_sided", tied=False, balanced=False, scale2=params.latent_crossover_scale),
        Regime(
            "tied_small_balanced",
            tied=True,
            balanced=True,
            scale2=params.latent_small_init_fraction,
        ),
        Regime("tied_linear", tied=True, balanced=False, scale2=params.latent_linear_scale),
    ]


def initial_factors(
    regime: Regime, n_units: int, n_max: int, w_star: float, jitter: float, gen: torch.Generator
) -> tuple[Tensor, Tensor, float]:
    """``(b₀, c₀, g)`` for ``n_units`` units; tied models have one pair and gain ``g = N``.

    Small balanced: ``b = c = ε`` with ``ε² = frac · w*/N_max``, so ``w₀ = N ε² ≤ frac · w*`` never
    exceeds the target at any ``N`` of the sweep. One-sided: ``b = β``, ``c = 0``.
    """
    units = 1 if regime.tied else n_units
    gain = float(n_units) if regime.tied else 1.0
    if regime.balanced:
        eps = math.sqrt(regime.scale2 * w_star / n_max)
        b, c = torch.full((units,), eps, dtype=DTYPE), torch.full((units,), eps, dtype=DTYPE)
    else:
        b = torch.full((units,), math.sqrt(regime.scale2 * w_star), dtype=DTYPE)
        c = torch.zeros(units, dtype=DTYPE)
    if jitter > 0:
        b = b * (
            1.0 + jitter * torch.randn(units, generator=gen, dtype=DTYPE, device=gen.device).cpu()
        )
        if regime.balanced:
            noise = torch.randn(units, generator=gen, dtype=DTYPE, device=gen.device).cpu()
            c = c * (1.0 + jitter * noise)
    return b, c, gain


def reduced_t90(
    b0: Tensor, c0: Tensor, gain: Tensor, eta: Tensor, sigma: Tensor, dt: Tensor, max_steps: int
) -> Tensor:
    """Vectorized reduced GD over rows (zero-padded units stay at zero); ``t_90`` per row in ``τ``.

    Runs in chunks so a GPU syncs once per chunk, not once per step.
    """
    b, c = b0.clone(), c0.clone()
    n_rows = b.shape[0]
    target = LEVEL * eta / sigma
    w = gain * (b * c).sum(dim=1)
    t90 = torch.where(w >= target, torch.zeros_like(w), torch.full_like(w, math.nan))
    step = 0
    while step < max_steps and bool(torch.isnan(t90).any()):
        history = torch.empty(CHUNK + 1, n_rows, dtype=DTYPE, device=b.device)
        history[0] = w
        for i in range(CHUNK):
            kick = (dt * gain * (eta - sigma * w))[:, None]
            b, c = b + kick * c, c + kick * b
            w = gain * (b * c).sum(dim=1)
            history[i + 1] = w
        # first crossing inside this chunk, interpolated between the bracketing steps
        crossed = (history[1:] >= target) & (history[:-1] < target) & torch.isnan(t90)
        rows = torch.nonzero(crossed.any(dim=0)).squeeze(1)
        if rows.numel():
            first = crossed.to(torch.int64).argmax(dim=0)[rows]
            lo, hi = history[first, rows], history[first + 1, rows]
            frac = ((target[rows] - lo) / (hi - lo)).clamp(0.0, 1.0)
            t90[rows] = (step + first + frac) * dt[rows]
        step += CHUNK
    return t90


def latent_sweep(
    params: Params,
    problems: list[Problem],
    gen: torch.Generator,
    only: set[str] | None = None,
    with_spot_checks: bool = True,
) -> dict[str, Any]:
    """All regimes × sizes × seeds in one vectorized reduced run, then fits and spot checks.

    ``only`` restricts the regimes by name (tests use it to keep to the smallest sub-experiment).
    """
    device = problems[0].u.device
    chosen = [r for r in regimes(params) if only is None or r.name in only]
    sizes = sorted(params.latent_sizes)
    n_max = max(sizes)
    rows: list[tuple[Regime, int, int]] = []
    b_rows, c_rows, gains, etas, sigmas, dts, theory = [], [], [], [], [], [], []
    for regime in chosen:
        for n in sizes:
            for seed_idx, prob in enumerate(problems):
                b, c, g = initial_factors(regime, n, n_max, prob.w_star, params.init_jitter, gen)
                p_sum, q_sum = float(((b + c) ** 2).sum()), float(((b - c) ** 2).sum())
                rate = g * prob.sigma * math.sqrt(4.0 * prob.w_star**2 + g**2 * p_sum * q_sum)
                rows.append((regime, n, seed_idx))
                b_rows.append(torch.nn.functional.pad(b, (0, n_max - b.shape[0])))
                c_rows.append(torch.nn.functional.pad(c, (0, n_max - c.shape[0])))
                gains.append(g)
                etas.append(prob.eta)
                sigmas.append(prob.sigma)
                dts.append(params.latent_step_fraction / rate)
                theory.append(latent_t_level(prob.eta, prob.sigma, g, p_sum, q_sum, LEVEL))

    def vec(values: list[float]) -> Tensor:
        return torch.tensor(values, dtype=DTYPE, device=device)

    t90 = (
        reduced_t90(
            torch.stack(b_rows).to(device),
            torch.stack(c_rows).to(device),
            vec(gains),
            vec(etas),
            vec(sigmas),
            vec(dts),
            max_steps=400_000,
        )
        .cpu()
        .numpy()
    )
    theory_arr = np.array(theory)
    out: dict[str, Any] = {"level": LEVEL, "regimes": {}}
    eta_mean = float(np.mean([p.eta for p in problems]))
    for regime in chosen:
        idx = [i for i, r in enumerate(rows) if r[0].name == regime.name]
        sim = t90[idx].reshape(len(sizes), len(problems)).mean(axis=1)
        th = theory_arr[idx].reshape(len(sizes), len(problems)).mean(axis=1)
        n_arr = np.array(sizes, dtype=np.float64)
        entry: dict[str, Any] = {
            "tied": regime.tied,
            "init": "b = c = ε" if regime.balanced else "b = β, c = 0",
            "scale2_over_w_star": regime.scale2,
            "N": sizes,
            "t90": sim.tolist(),
            "t90_theory": th.tolist(),
            "max_rel_diff_sim_vs_theory": float(np.max(np.abs(sim / th - 1.0))),
            "loglog_slope": loglog_slope(n_arr, sim),
            "loglog_slope_theory": loglog_slope(n_arr, th),
            "log_coefficient": log_coefficient(n_arr, sim),
            # if t90 = C/(N²η) held, t90·N²·η would be constant across N
            "t90_N2_eta_ratio_max_over_min": float(
                np.max(sim * n_arr**2 * eta_mean) / np.min(sim * n_arr**2 * eta_mean)
            ),
        }
        if regime.balanced and not regime.tied:
            entry["expected"] = "logarithmic in N: t90 ≈ const - ln(N)/(2η)"
            entry["log_coefficient_predicted"] = -1.0 / (2.0 * eta_mean)
        elif regime.balanced:
            entry["expected"] = "t90 ≈ ln(9 w*/(N ε²))/(2Nη): 1/N times a logarithm"
        else:
            entry["expected"] = "t90 ≈ ln(10)/(g N β² σ), slope -2 if tied else -1, when N β² ≳ w*"
        out["regimes"][regime.name] = entry
    out["n2_claim"] = n2_verdict(out["regimes"])
    out["spot_checks"] = spot_checks(params, problems[0], gen) if with_spot_checks else []
    return out


def n2_verdict(entries: dict[str, Any]) -> dict[str, Any]:
    """Test 'convergence time O(τ/(N²η))': which regimes actually show a log-log slope near -2."""
    slopes = {name: e["loglog_slope"] for name, e in entries.items()}
    near_minus_two = [name for name, s in slopes.items() if -2.2 <= s <= -1.8]
    return {
        "slopes": slopes,
        "regimes_with_slope_near_-2": near_minus_two,
        "holds_for_independent_units": any(not entries[n]["tied"] for n in near_minus_two),
    }


def spot_checks(params: Params, problem: Problem, gen: torch.Generator) -> list[dict[str, Any]]:
    """Autograd GD on the real convolution for a few ``N``: its ``t_90`` against the quadrature."""
    conv = make_conv(problem.u, "circular")
    checks: list[dict[str, Any]] = []
    n_max = max(params.latent_sizes)
    for regime in regimes(params)[:2]:
        for n in params.latent_spot_sizes:
            b, c, g = initial_factors(regime, n, n_max, problem.w_star, 0.0, gen)
            p_sum, q_sum = float(((b + c) ** 2).sum()), float(((b - c) ** 2).sum())
            rate = g * problem.sigma * math.sqrt(4.0 * problem.w_star**2 + g**2 * p_sum * q_sum)
            lr = params.latent_step_fraction / rate
            t_theory = latent_t_level(problem.eta, problem.sigma, g, p_sum, q_sum, LEVEL)
            steps = math.ceil(1.05 * t_theory / lr) + 2
            trace = gd_ssm(conv, problem.y, problem.a, b, c, lr, steps)
            t_gd = crossing_time(trace.t_over_tau, trace.w, LEVEL * problem.w_star)
            checks.append(
                {
                    "regime": regime.name,
                    "N": n,
                    "t90_autograd": t_gd,
                    "t90_theory": t_theory,
                    "rel_diff": abs(t_gd / t_theory - 1.0),
                    "steps": steps,
                }
            )
    return checks
