"""Closed forms and reduced equations of gradient flow on ``loss = const - η w + ½ σ w²``.

Time is always measured in units of ``τ = 1/learning rate`` (so ``t/τ = steps · lr``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


def balanced_logistic(t_over_tau: Array, eta: float, sigma: float, w0: float) -> Array:
    """The issue's closed form ``w(t) = (η/σ) e^{2ηt/τ} / (e^{2ηt/τ} - 1 + η/(σ w₀))``.

    Written as ``w* / (1 + (w*/w₀ - 1) e^{-2ηt/τ})`` so that it does not overflow for long runs.
    """
    w_star = eta / sigma
    return w_star / (1.0 + (w_star / w0 - 1.0) * np.exp(-2.0 * eta * t_over_tau))


def balanced_rhs(w: Array, eta: float, sigma: float) -> Array:
    """``τ dw/dt = 2 w (η - σ w)``: the flow the balanced closed form must satisfy."""
    return 2.0 * w * (eta - sigma * w)


def deep_scalar_rhs(w: Array, eta: float, sigma: float, n_factors: int) -> Array:
    """Balanced ``n_factors``-layer scalar deep linear network: ``τ ẇ = D w^{2-2/D} (η - σ w)``."""
    return n_factors * np.abs(w) ** (2.0 - 2.0 / n_factors) * (eta - sigma * w)


def deep_scalar_trajectory(
    t_over_tau: Array, eta: float, sigma: float, w0: float, n_factors: int, substeps: int = 20
) -> Array:
    """Integrate :func:`deep_scalar_rhs` by RK4, ``substeps`` steps per interval of ``t_over_tau``.

    ``t_over_tau`` must start at 0 and be increasing; it is the prediction the deep SSM modes are
    compared with (``n_factors = 2`` reproduces :func:`balanced_logistic`).
    """
    out = np.empty_like(t_over_tau)
    w = float(w0)
    out[0] = w
    for i in range(1, len(t_over_tau)):
        h = (t_over_tau[i] - t_over_tau[i - 1]) / substeps
        for _ in range(substeps):
            k1 = float(deep_scalar_rhs(np.array(w), eta, sigma, n_factors))
            k2 = float(deep_scalar_rhs(np.array(w + 0.5 * h * k1), eta, sigma, n_factors))
            k3 = float(deep_scalar_rhs(np.array(w + 0.5 * h * k2), eta, sigma, n_factors))
            k4 = float(deep_scalar_rhs(np.array(w + h * k3), eta, sigma, n_factors))
            w += h * (k1 + 2 * k2 + 2 * k3 + k4) / 6.0
        out[i] = w
    return out


def crossing_time(t_over_tau: Array, w: Array, level: float) -> float:
    """First time ``w`` reaches ``level`` (linear interpolation between samples); NaN if never."""
    above = np.nonzero(w >= level)[0]
    if len(above) == 0:
        return math.nan
    i = int(above[0])
    if i == 0:
        return float(t_over_tau[0])
    frac = (level - w[i - 1]) / (w[i] - w[i - 1])
    return float(t_over_tau[i - 1] + frac * (t_over_tau[i] - t_over_tau[i - 1]))


def fit_logistic_rate(
    t_over_tau: Array, w: Array, w_star: float, lo: float = 0.1, hi: float = 0.9
) -> float:
    """Slope of ``logit(w/w*)`` against ``t/τ`` where ``lo < w/w* < hi``; ``2η`` in theory."""
    ratio = w / w_star
    mask = (ratio > lo) & (ratio < hi)
    if mask.sum() < 3:
        return math.nan
    logit = np.log(ratio[mask] / (1.0 - ratio[mask]))
    slope, _ = np.polyfit(t_over_tau[mask], logit, 1)
    return float(slope)


def loglog_slope(sizes: Array, times: Array) -> float:
    """Least-squares slope of ``ln t`` against ``ln N``."""
    slope, _ = np.polyfit(np.log(sizes), np.log(times), 1)
    return float(slope)


def log_coefficient(sizes: Array, times: Array) -> float:
    """Least-squares ``β`` in ``t ≈ α + β ln N`` (the small-balanced regime is logarithmic)."""
    slope, _ = np.polyfit(np.log(sizes), times, 1)
    return float(slope)


@lru_cache(maxsize=4)
def gauss_legendre(n_nodes: int) -> tuple[Array, Array]:
    """Nodes and weights on [-1, 1] (an eigenvalue problem: worth computing once)."""
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    return nodes, weights


def hyperbolic_w(s: Array, gain: float, sum_p2: float, sum_q2: float) -> Array:
    """``w(s) = (g/4)(P e^{2s} - Q e^{-2s})``: the exact shared-``a`` latent trajectory.

    With a shared error ``e(t) = η - σ w``, every unit obeys ``τ ḃ_n = g c_n e``,
    ``τ ċ_n = g b_n e``, so ``p_n = b_n + c_n`` grows as ``e^{s}`` and ``q_n = b_n - c_n``
    shrinks as ``e^{-s}`` with ``τ ṡ = g e``. ``P = Σ p_n(0)²``, ``Q = Σ q_n(0)²``; ``g`` is 1
    for independent units and ``N`` when all units share one ``(b, c)`` pair (``w = N c b``).
    """
    return 0.25 * gain * (sum_p2 * np.exp(2.0 * s) - sum_q2 * np.exp(-2.0 * s))


def latent_t_level(
    eta: float, sigma: float, gain: float, sum_p2: float, sum_q2: float, level: float = 0.9
) -> float:
    """Exact gradient-flow time (units of ``τ``) for ``w`` to reach ``level · w*``.

    ``t = (1/g) ∫₀^{s₁} ds / (η - σ w(s))``, with ``s₁`` solving ``w(s₁) = level · w*`` (a
    quadratic in ``e^{2s}``); the integrand is smooth, so Gauss–Legendre quadrature is exact to
    round-off.
    """
    w_target = level * eta / sigma
    w_start = float(hyperbolic_w(np.array(0.0), gain, sum_p2, sum_q2))
    if w_start >= w_target:
        return 0.0
    lin = 4.0 * w_target / gain
    x1 = (lin + math.sqrt(lin**2 + 4.0 * sum_p2 * sum_q2)) / (2.0 * sum_p2)
    s1 = 0.5 * math.log(x1)
    nodes, weights = gauss_legendre(200)
    s = 0.5 * s1 * (nodes + 1.0)
    integrand = 1.0 / (eta - sigma * hyperbolic_w(s, gain, sum_p2, sum_q2))
    return float(0.5 * s1 * np.sum(weights * integrand) / gain)
