"""Experiment 6: a MIMO complex-diagonal SSM, ``x_t = Λ x_{t-1} + B u_t, y_t = Re(C x_t)``.

``u ∈ R^P, y ∈ R^Q, Λ = diag(λ_n)``; with real ``B`` (N×P), ``C`` (Q×N) the transfer at frequency
``k`` is ``H_k = C diag(g̃_k(λ_n)) B`` with ``g̃_k`` the real-readout transfer. For white unit
input the expected loss is ``(1/2L) Σ_k ‖H*_k − H_k‖_F²`` (Parseval). When all units share one
pole ``λ`` (as the teacher's), this is ``(σ/2)‖M* − C B‖_F²`` with ``σ = (1/L) Σ_k |g̃_k(λ)|²``:
Saxe's matrix deep linear network. From an aligned balanced init each singular mode ``i`` of
``M*`` follows the logistic ``u_i(t) = s_i e^{2 s_i σ t} / (e^{2 s_i σ t} − 1 + s_i/u₀)`` (``t`` in
units of ``τ = 1/lr``), half-time ``ln(s_i/u₀ − 1)/(2 s_i σ)``. GD runs with autograd on the
full ``H_k`` (built unit by unit from ``λ_n``); a random small init is run as well, and an optional
spot check learns ``λ = exp(−softplus(ν) + iθ)`` shared by the units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from analysis.studies.ssm.params import Params
from analysis.studies.ssm.spectral import DTYPE, transfer_real_readout
from analysis.studies.ssm.theory import Array, crossing_time


@dataclass(frozen=True)
class MimoCurves:
    t_over_tau: Array
    strengths: Array  # (T, r): u_i(t) / s_i, aligned init
    predicted: Array  # (T, r): logistic / s_i
    random_strengths: Array  # (T, r): random small init
    singular_values: Array


def transfers(lam: Tensor, seq_len: int) -> Tensor:
    """``g̃_k(λ_n)``, shape (L, N)."""
    return torch.stack([transfer_real_readout(lam[n], seq_len) for n in range(lam.shape[0])], 1)


def transfer_matrix(c: Tensor, g: Tensor, b: Tensor) -> Tensor:
    """``H_k = C diag(g_k) B``, shape (L, Q, P)."""
    return torch.einsum("qn,kn,np->kqp", c.to(g.dtype), g, b.to(g.dtype))


def population_loss(h_teacher: Tensor, h: Tensor) -> Tensor:
    seq_len = h.shape[0]
    return 0.5 * (h_teacher - h).abs().pow(2).sum() / seq_len


def pole(nu: Tensor, theta: Tensor) -> Tensor:
    return torch.exp(torch.complex(-torch.nn.functional.softplus(nu), theta))


def teacher_matrix(params: Params, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``M* = U diag(s) Vᵀ`` with the issue's well-separated singular values."""
    q, p = params.mimo_outputs, params.mimo_inputs
    r = len(params.mimo_singular_values)
    device = gen.device  # every tensor lives where the seeded generator does (CPU or CUDA)
    u, _ = torch.linalg.qr(torch.randn(q, r, generator=gen, dtype=DTYPE, device=device))
    v, _ = torch.linalg.qr(torch.randn(p, r, generator=gen, dtype=DTYPE, device=device))
    s = torch.tensor(params.mimo_singular_values, dtype=DTYPE, device=device)
    return u @ torch.diag(s) @ v.T, u, s, v


def run_gd(
    h_teacher: Tensor, g: Tensor, b: Tensor, c: Tensor, lr: float, steps: int, u: Tensor, v: Tensor
) -> Array:
    b = b.clone().requires_grad_(True)
    c = c.clone().requires_grad_(True)
    out = np.empty((steps + 1, u.shape[1]))
    for step in range(steps + 1):
        with torch.no_grad():
            out[step] = torch.diagonal(u.T @ (c @ b) @ v).cpu().numpy()
        if step == steps:
            break
        loss = population_loss(h_teacher, transfer_matrix(c, g, b))
        gb, gc = torch.autograd.grad(loss, (b, c))
        with torch.no_grad():
            b -= lr * gb
            c -= lr * gc
    return out


def mimo_experiment(params: Params, gen: torch.Generator) -> tuple[dict[str, Any], MimoCurves]:
    n, seq_len = params.mimo_latent, params.mimo_seq_len
    _, u, s, v = teacher_matrix(params, gen)
    r = s.shape[0]
    lam_star = complex(
        math.exp(-params.mimo_pole_decay) * math.cos(2 * math.pi * params.mimo_pole_freq),
        math.exp(-params.mimo_pole_decay) * math.sin(2 * math.pi * params.mimo_pole_freq),
    )
    lam = torch.full((n,), lam_star, dtype=torch.complex128, device=gen.device)
    g = transfers(lam, seq_len)
    sigma = float((g[:, 0].abs() ** 2).mean())
    # the teacher: N* = r units on the same pole, C* = U diag(√s), B* = diag(√s) Vᵀ
    h_teacher = transfer_matrix(u * s.sqrt(), g[:, :r], s.sqrt()[:, None] * v.T)
    s_max = float(s.max())
    lr = params.mimo_lr_scale / (sigma * s_max)
    u0 = params.mimo_init_fraction * s_max
    sv = s.cpu().numpy()
    t_half = np.log(sv / u0 - 1.0) / (2.0 * sv * sigma)
    steps = math.ceil(params.mimo_horizon * t_half.max() / lr)
    t = np.arange(steps + 1) * lr
    # aligned balanced init: C₀ = √u₀ U Rᵀ, B₀ = √u₀ R Vᵀ with orthonormal R (N × r)
    rot, _ = torch.linalg.qr(torch.randn(n, r, generator=gen, dtype=DTYPE, device=gen.device))
    b0, c0 = math.sqrt(u0) * rot @ v.T, math.sqrt(u0) * u @ rot.T
    aligned = run_gd(h_teacher, g, b0, c0, lr, steps, u, v)
    # random small init of the same scale (not aligned: the DLN result holds approximately)
    scale = math.sqrt(u0 / n)
    b_r = scale * torch.randn(n, params.mimo_inputs, generator=gen, dtype=DTYPE, device=gen.device)
    c_r = scale * torch.randn(params.mimo_outputs, n, generator=gen, dtype=DTYPE, device=gen.device)
    random = run_gd(h_teacher, g, b_r, c_r, lr, steps, u, v)

    e = np.exp(2.0 * np.outer(t, sv) * sigma)
    predicted = sv * e / (e - 1.0 + sv / u0)
    half = [crossing_time(t, aligned[:, i] / sv[i], 0.5) for i in range(r)]
    half_random = [crossing_time(t, random[:, i] / sv[i], 0.5) for i in range(r)]
    rel = [abs(h / p - 1.0) for h, p in zip(half, t_half, strict=True)]
    rel_random = [abs(h / p - 1.0) for h, p in zip(half_random, t_half, strict=True)]
    summary: dict[str, Any] = {
        "N": n,
        "P": params.mimo_inputs,
        "Q": params.mimo_outputs,
        "L": seq_len,
        "teacher_pole": [lam_star.real, lam_star.imag],
        "sigma": sigma,
        "singular_values": sv.tolist(),
        "predicted_half_time": t_half.tolist(),
        "half_time_aligned": half,
        "half_time_random": half_random,
        "max_half_time_rel_error": float(max(rel)),
        "max_half_time_rel_error_random": float(max(rel_random)),
        "max_curve_abs_error": float(np.max(np.abs(aligned - predicted)) / s_max),
        "in_order_of_strength": bool(np.all(np.diff(half_random) > 0)),
        "final_rel_error_random": float(np.max(np.abs(random[-1] / sv - 1.0))),
        "time_units": "t/τ with τ = 1/lr",
    }
    if params.mimo_learn_pole_steps > 0:
        summary["learn_pole"] = learn_pole(params, h_teacher, lam_star, gen)
    curves = MimoCurves(t, aligned / sv, predicted / sv, random / sv, sv)
    return summary, curves


def learn_pole(
    params: Params, h_teacher: Tensor, lam_star: complex, gen: torch.Generator
) -> dict[str, Any]:
    """Spot check: learn a shared ``λ = exp(−softplus(ν) + iθ)`` together with ``(B, C)``."""
    n, seq_len = params.mimo_latent, params.mimo_seq_len
    start = (
        lam_star
        * params.mimo_pole_init_scale
        * complex(math.cos(params.mimo_pole_init_turn), math.sin(params.mimo_pole_init_turn))
    )
    on: dict[str, Any] = {"dtype": DTYPE, "device": gen.device}
    nu = torch.tensor(math.log(math.expm1(-math.log(abs(start)))), **on, requires_grad=True)
    theta = torch.tensor(math.atan2(start.imag, start.real), **on, requires_grad=True)
    b = (0.3 * torch.randn(n, params.mimo_inputs, generator=gen, **on)).requires_grad_(True)
    c = (0.3 * torch.randn(params.mimo_outputs, n, generator=gen, **on)).requires_grad_(True)
    opt = torch.optim.Adam([nu, theta, b, c], lr=params.mimo_pole_lr)
    loss0 = None
    for _ in range(params.mimo_learn_pole_steps):
        lam = pole(nu, theta)
        g = transfer_real_readout(lam, seq_len)[:, None].expand(seq_len, n)
        loss = population_loss(h_teacher, transfer_matrix(c, g, b))
        loss0 = float(loss.detach()) if loss0 is None else loss0
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    with torch.no_grad():
        final = complex(pole(nu, theta))
        scale = float(population_loss(h_teacher, torch.zeros_like(h_teacher)))
    return {
        "pole_init": [start.real, start.imag],
        "pole_final": [final.real, final.imag],
        "pole_rel_error": abs(final - lam_star) / abs(lam_star),
        "initial_rel_error": abs(start - lam_star) / abs(lam_star),
        "final_loss_rel": float(loss.detach()) / scale,
        "initial_loss_rel": (loss0 or 0.0) / scale,
        "optimizer": "Adam (spot check only)",
    }
