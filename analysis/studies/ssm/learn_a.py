"""Experiment 3: train ``a`` too, and find where the fixed-``a`` theory stops describing learning.

``∂loss/∂a = -w η'(a) + ½ w² σ'(a)`` is proportional to ``w``, so ``a`` is frozen while ``w`` is
small; the fixed-``a`` closed form should hold through the initial plateau and fail once ``w`` has
grown. The frequency-domain loss ``-η(a) w + ½ σ(a) w²`` stays exact (Parseval), so the same reduced
equations, with ``σ, η`` recomputed from the spectra at the current ``a``, must still track GD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from analysis.studies.ssm.fixed_a import make_problem
from analysis.studies.ssm.params import Params
from analysis.studies.ssm.spectral import DTYPE, Spectra, transfer_g
from analysis.studies.ssm.theory import Array, balanced_logistic, crossing_time
from analysis.studies.ssm.training import Trace, gd_ssm, make_conv

DEPARTURE_TOLERANCE = 0.05  # relative gap |w - w_fixed(t)| / w_fixed(t) that counts as departed


@dataclass(frozen=True)
class LearnAResult:
    summary: dict[str, Any]
    trace: Trace
    fixed_theory: Array
    reduced_w: Array
    reduced_a: Array


def reduced_flow(
    spectra: Spectra, a0: float, b0: float, c0: float, lr: float, steps: int
) -> tuple[Array, Array]:
    """GD on ``-η(a) w + ½ σ(a) w²`` (``a = tanh θ``), with ``σ(a), η(a)`` from the spectra."""
    seq_len = spectra.seq_len
    device = spectra.s_uu.device
    theta = torch.tensor(math.atanh(a0), dtype=DTYPE, device=device, requires_grad=True)
    b = torch.tensor(b0, dtype=DTYPE, device=device, requires_grad=True)
    c = torch.tensor(c0, dtype=DTYPE, device=device, requires_grad=True)
    hist = torch.empty(steps + 1, 2, dtype=DTYPE, device=device)
    for step in range(steps + 1):
        a = torch.tanh(theta)
        hist[step, 0], hist[step, 1] = a.detach(), (b * c).detach()
        if step == steps:
            break
        sigma, eta = spectra.sigma_eta(transfer_g(a, seq_len))
        loss = -eta * b * c + 0.5 * sigma * (b * c) ** 2
        grads = torch.autograd.grad(loss, [theta, b, c])
        with torch.no_grad():
            for p, g in zip((theta, b, c), grads, strict=True):
                p -= lr * g
    out = hist.cpu().numpy()
    return out[:, 0], out[:, 1]


def learn_a(params: Params, gen: torch.Generator) -> LearnAResult:
    problem = make_problem(params, "white", gen, params.learn_a_init)
    lr = params.lr_scale / problem.eta
    w0 = params.init_fraction * problem.w_star
    t90_fixed = math.log(9.0 * (1.0 / params.init_fraction - 1.0)) / (2.0 * problem.eta)
    steps = math.ceil(params.learn_a_horizon * t90_fixed / lr)
    start = torch.full((1,), math.sqrt(w0), dtype=DTYPE)
    trace = gd_ssm(
        make_conv(problem.u, "circular"),
        problem.y,
        problem.a,
        start,
        start,
        lr,
        steps,
        learn_a=True,
    )
    t, w, a = trace.t_over_tau, trace.w, trace.a
    fixed = balanced_logistic(t, problem.eta, problem.sigma, w0)
    gap = np.abs(w - fixed) / fixed
    departed = np.nonzero(gap > DEPARTURE_TOLERANCE)[0]
    i_dep = int(departed[0]) if len(departed) else len(t) - 1
    a_path = abs(params.teacher_a - params.learn_a_init)
    a_progress = np.abs(a - params.learn_a_init) / max(a_path, 1e-12)
    red_a, red_w = reduced_flow(
        Spectra.of(problem.u, problem.y),
        params.learn_a_init,
        math.sqrt(w0),
        math.sqrt(w0),
        lr,
        steps,
    )
    summary: dict[str, Any] = {
        "a_init": params.learn_a_init,
        "a_teacher": params.teacher_a,
        "a_final": float(a[-1]),
        "abs_a_error_final": float(abs(a[-1] - params.teacher_a)),
        "a_reaches_teacher": bool(abs(a[-1] - params.teacher_a) < 1e-3),
        "w_teacher": params.teacher_gain,
        "w_final": float(w[-1]),
        "w_star_fixed_a_init": problem.w_star,
        "final_loss": float(trace.loss[-1]),
        "t90_fixed_a_theory": t90_fixed,
        "t90_learned": crossing_time(t, w, 0.9 * params.teacher_gain),
        "departure_t_over_tau": float(t[i_dep]),
        "departure_w_over_w_star_fixed": float(w[i_dep] / problem.w_star),
        "a_at_departure": float(a[i_dep]),
        "a_moved_10pct_t_over_tau": crossing_time(t, a_progress, 0.1),
        "reduced_flow_max_abs_diff_a": float(np.max(np.abs(red_a - a))),
        "reduced_flow_max_abs_diff_w": float(np.max(np.abs(red_w - w))),
        "departure_tolerance": DEPARTURE_TOLERANCE,
        "lr": lr,
        "steps": steps,
    }
    return LearnAResult(summary, trace, fixed, red_w, red_a)
