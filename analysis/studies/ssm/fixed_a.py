"""Experiments 1-2: fixed ``a`` against the closed form, the matched two-layer network, and the
circular-versus-causal convolution pitfall."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from analysis.studies.ssm.params import Params
from analysis.studies.ssm.spectral import (
    DTYPE,
    Spectra,
    causal_conv,
    circular_conv,
    decay_kernel,
    make_input,
    sigma_eta_time,
    transfer_g,
)
from analysis.studies.ssm.theory import Array, balanced_logistic, fit_logistic_rate
from analysis.studies.ssm.training import (
    Trace,
    gd_ssm,
    gd_two_layer,
    make_conv,
    matched_linear_network_data,
)

INPUT_KINDS = ("white", "ar1")


@dataclass(frozen=True)
class Problem:
    """One data set: input ``u``, teacher output ``y``, and the student's fixed-``a`` statistics."""

    u: Tensor
    y: Tensor
    a: float
    sigma: float
    eta: float

    @property
    def w_star(self) -> float:
        return self.eta / self.sigma


def scalar(value: float, device: torch.device | str) -> Tensor:
    return torch.tensor(value, dtype=DTYPE, device=device)


def make_problem(
    params: Params, kind: str, gen: torch.Generator, a: float, conv_mode: str = "circular"
) -> Problem:
    """Teacher output on a fresh input; ``σ, η`` by FFT (circular) or by definition (causal)."""
    u = make_input(kind, params.n_sequences, params.seq_len, params.ar_coef, gen)
    conv = circular_conv if conv_mode == "circular" else causal_conv
    teacher = params.teacher_gain * decay_kernel(scalar(params.teacher_a, u.device), params.seq_len)
    y = conv(u, teacher)
    if conv_mode == "circular":
        sigma, eta = Spectra.of(u, y).sigma_eta(transfer_g(scalar(a, u.device), params.seq_len))
        return Problem(u, y, a, float(sigma), float(eta))
    feature = conv(u, decay_kernel(scalar(a, u.device), params.seq_len))
    sigma_t, eta_t = sigma_eta_time(u, y, feature)
    return Problem(u, y, a, sigma_t, eta_t)


def steps_to_converge(eta: float, w0_fraction: float, lr: float, margin: float = 1.3) -> int:
    """Steps for the balanced logistic to pass 99% of ``w*``, with a safety margin."""
    t_end = margin * (math.log(1.0 / w0_fraction) + math.log(99.0)) / (2.0 * eta)
    return math.ceil(t_end / lr)


def run_balanced(problem: Problem, params: Params, conv_mode: str = "circular") -> Trace:
    """GD from the balanced init ``b = c = √(w₀)`` with ``lr = lr_scale / η``."""
    lr = params.lr_scale / problem.eta
    w0 = params.init_fraction * problem.w_star
    start = torch.full((1,), math.sqrt(w0), dtype=DTYPE)
    steps = steps_to_converge(problem.eta, params.init_fraction, lr)
    conv = make_conv(problem.u, conv_mode)
    return gd_ssm(conv, problem.y, problem.a, start, start, lr, steps)


def compare_to_closed_form(trace: Trace, sigma: float, eta: float) -> dict[str, float]:
    """Max relative error of ``w(t)`` against the closed form, and the fitted vs predicted rate."""
    w = trace.w
    theory = balanced_logistic(trace.t_over_tau, eta, sigma, float(w[0]))
    return {
        "max_rel_error": float(np.max(np.abs(w - theory) / np.abs(theory))),
        "fitted_rate": fit_logistic_rate(trace.t_over_tau, w, eta / sigma),
        "predicted_rate": 2.0 * eta,
    }


def reduced_gd(sigma: float, eta: float, b0: float, c0: float, lr: float, steps: int) -> Array:
    """The same GD on ``-η w + ½ σ w²`` with scalars: ``b ← b + lr c e``, ``c ← c + lr b e``."""
    out = np.empty(steps + 1)
    b, c = b0, c0
    for step in range(steps + 1):
        out[step] = b * c
        err = eta - sigma * b * c
        b, c = b + lr * c * err, c + lr * b * err
    return out


def fixed_a_one(params: Params, kind: str, gen: torch.Generator) -> tuple[dict[str, Any], Trace]:
    problem = make_problem(params, kind, gen, params.student_a)
    trace = run_balanced(problem, params)
    stats = compare_to_closed_form(trace, problem.sigma, problem.eta)
    lr = params.lr_scale / problem.eta
    start = float(trace.b[0, 0])
    reduced = reduced_gd(problem.sigma, problem.eta, start, start, lr, len(trace.w) - 1)
    stats.update(
        # the closed form's error is pure time discretization iff GD matches the reduced map
        max_rel_error_vs_reduced_gd=float(np.max(np.abs(trace.w - reduced) / reduced)),
        sigma=problem.sigma,
        eta=problem.eta,
        w_star=problem.w_star,
        final_w=float(trace.w[-1]),
        lr=lr,
        steps=len(trace.t_over_tau) - 1,
    )
    return stats, trace


def dln_equivalence(params: Params, gen: torch.Generator) -> tuple[dict[str, float], Trace, Trace]:
    """SSM (time-domain GD) and the matched network ``x ~ N(0, σ), y = (η/σ) x`` side by side.

    The init is deliberately unbalanced (``b₀ = 4 c₀``) so the comparison covers more than the
    logistic special case, and ``b² - c²`` has something non-zero to conserve.
    """
    problem = make_problem(params, "white", gen, params.student_a)
    lr = params.lr_scale / problem.eta
    w0 = params.init_fraction * problem.w_star
    b0, c0 = 2.0 * math.sqrt(w0), 0.5 * math.sqrt(w0)
    steps = steps_to_converge(problem.eta, params.init_fraction, lr)
    ssm = gd_ssm(
        make_conv(problem.u, "circular"),
        problem.y,
        problem.a,
        torch.tensor([b0], dtype=DTYPE),
        torch.tensor([c0], dtype=DTYPE),
        lr,
        steps,
    )
    x, y = matched_linear_network_data(problem.sigma, problem.eta, 4096, gen)
    dln = gd_two_layer(x, y, b0, c0, lr, steps)
    diffs = [np.abs(ssm.b - dln.b), np.abs(ssm.c - dln.c), np.abs(ssm.w - dln.w)]
    conserved = (ssm.b**2 - ssm.c**2)[:, 0]
    stats = {
        "max_abs_diff": float(max(float(d.max()) for d in diffs)),
        "max_abs_diff_w": float(diffs[2].max()),
        "w_star": problem.w_star,
        "conserved_initial": float(conserved[0]),
        "conserved_max_drift": float(np.max(np.abs(conserved - conserved[0]))),
    }
    return stats, ssm, dln


def causal_pitfall(params: Params, gen: torch.Generator) -> dict[str, Any]:
    """How wrong the FFT statistics are when the model really runs the causal recurrence.

    For each ``a``: relative error of ``σ, η`` computed with ``g_k`` against their time-domain
    values under causal convolution, and the closed form's trajectory error with each pair.
    """
    out: dict[str, Any] = {}
    for a in (params.student_a, params.causal_check_a):
        causal = make_problem(params, "white", gen, a, conv_mode="causal")
        sigma_fft, eta_fft = Spectra.of(causal.u, causal.y).sigma_eta(
            transfer_g(scalar(a, causal.u.device), params.seq_len)
        )
        trace = run_balanced(causal, params, conv_mode="causal")
        out[f"a={a:g}"] = {
            "abs_a_pow_L": abs(a) ** params.seq_len,
            "edge_scale_1_over_L_1_minus_a": 1.0 / (params.seq_len * (1.0 - abs(a))),
            "sigma_rel_error_fft": abs(float(sigma_fft) / causal.sigma - 1.0),
            "eta_rel_error_fft": abs(float(eta_fft) / causal.eta - 1.0),
            "max_rel_error_with_fft_stats": compare_to_closed_form(
                trace, float(sigma_fft), float(eta_fft)
            )["max_rel_error"],
            "max_rel_error_with_time_stats": compare_to_closed_form(
                trace, causal.sigma, causal.eta
            )["max_rel_error"],
        }
    return out


def closed_form_curve(trace: Trace, sigma: float, eta: float) -> Array:
    return balanced_logistic(trace.t_over_tau, eta, sigma, float(trace.w[0]))
