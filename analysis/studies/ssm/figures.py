"""Figures of the SSM study (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from analysis.studies.ssm.depth import DepthCurves
from analysis.studies.ssm.learn_a import LearnAResult
from analysis.studies.ssm.mimo import MimoCurves
from analysis.studies.ssm.theory import Array
from analysis.studies.ssm.training import Trace

MAX_POINTS = 1500


def thin(n: int) -> slice:
    """A stride that keeps at most ``MAX_POINTS`` samples of a trajectory."""
    return slice(None, None, max(1, n // MAX_POINTS))


@dataclass(frozen=True)
class FixedACurves:
    label: str
    trace: Trace
    theory: Array
    w_star: float


def fixed_a_figure(
    curves: list[FixedACurves], ssm: Trace, dln: Trace, w_star_dln: float, path: Path
) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for curve in curves:
        s = thin(len(curve.trace.t_over_tau))
        t = curve.trace.t_over_tau[s]
        axes[0].plot(t, curve.trace.w[s] / curve.w_star, ".", ms=2.5, label=f"GD, {curve.label}")
        axes[0].plot(
            t, curve.theory[s] / curve.w_star, "-", lw=1, label=f"closed form, {curve.label}"
        )
        rel = np.abs(curve.trace.w - curve.theory) / curve.theory
        axes[1].plot(t, rel[s], label=curve.label)
    axes[0].set(xlabel="t / τ", ylabel="w / w*", title="fixed a: GD vs closed form")
    axes[0].legend(fontsize=7)
    axes[1].axhline(0.02, color="k", ls=":", lw=1, label="2% target")
    axes[1].set(xlabel="t / τ", ylabel="|w - w_theory| / w_theory", title="relative error")
    axes[1].legend(fontsize=7)
    s = thin(len(ssm.t_over_tau))
    t = ssm.t_over_tau[s]
    for name, a, b in (("b / W₁", ssm.b, dln.b), ("c / W₂", ssm.c, dln.c)):
        axes[2].plot(t, a[s, 0] / np.sqrt(w_star_dln), "-", lw=2, alpha=0.5, label=f"SSM {name[0]}")
        axes[2].plot(t, b[s, 0] / np.sqrt(w_star_dln), "--", lw=1, label=f"network {name[-2:]}")
    axes[2].plot(t, ssm.w[s] / w_star_dln, "-", lw=2, alpha=0.5, label="SSM w")
    axes[2].plot(t, dln.w[s] / w_star_dln, "--", lw=1, label="network W₂W₁")
    axes[2].set(xlabel="t / τ", ylabel="in units of √w* (w: of w*)", title="SSM vs 2-layer network")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def learn_a_figure(result: LearnAResult, path: Path) -> str:
    summary, trace = result.summary, result.trace
    s = thin(len(trace.t_over_tau))
    t = trace.t_over_tau[s]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    axes[0].plot(t, trace.w[s], "-", lw=2, label="GD, a learned")
    axes[0].plot(t, result.reduced_w[s], "--", lw=1, label="reduced flow with σ(a), η(a)")
    axes[0].plot(t, result.fixed_theory[s], ":", lw=1.5, label="closed form, a fixed at a₀")
    axes[0].axhline(summary["w_teacher"], color="gray", lw=0.8, label="teacher w")
    axes[0].axvline(
        summary["departure_t_over_tau"], color="r", lw=0.8, label="departure (5% relative gap)"
    )
    axes[0].set(xlabel="t / τ", ylabel="w = c b", title="learning a as well")
    axes[0].legend(fontsize=7)
    axes[1].plot(t, trace.a[s], "-", lw=2, label="GD a(t)")
    axes[1].plot(t, result.reduced_a[s], "--", lw=1, label="reduced flow a(t)")
    axes[1].axhline(summary["a_teacher"], color="gray", lw=0.8, label="teacher a")
    axes[1].axvline(summary["departure_t_over_tau"], color="r", lw=0.8)
    axes[1].set(xlabel="t / τ", ylabel="a", title="a is frozen while w is small")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def latent_figure(sweep: dict[str, Any], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, entry in sweep["regimes"].items():
        sizes = np.asarray(entry["N"], dtype=float)
        (line,) = ax.loglog(sizes, entry["t90_theory"], "-", lw=1)
        ax.loglog(
            sizes,
            entry["t90"],
            "o",
            color=line.get_color(),
            ms=4,
            label=f"{name} (slope {entry['loglog_slope']:.2f})",
        )
    for check in sweep["spot_checks"]:
        ax.loglog(check["N"], check["t90_autograd"], "kx", ms=8)
    ax.plot([], [], "kx", label="autograd spot checks")
    ax.plot([], [], "k-", lw=1, label="exact quadrature")
    ax.set(xlabel="latent units N", ylabel="t90 / τ", title="convergence time vs latent size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def depth_figure(curves: list[DepthCurves], path: Path) -> str:
    fig, axes = plt.subplots(2, len(curves), figsize=(5 * len(curves), 7.5), squeeze=False)
    for col, curve in enumerate(curves):
        s = thin(len(curve.t_over_tau))
        t = curve.t_over_tau[s]
        ax = axes[0, col]
        for j in range(curve.measured.shape[1]):
            (line,) = ax.plot(
                t, curve.bin_gain[s, j], "-", lw=2, alpha=0.6, label=f"|H| at mode {j}"
            )
            ax.plot(t, curve.predicted[s, j], "--", color=line.get_color(), lw=1)
        ax.plot([], [], "k--", lw=1, label="matched deep linear net")
        ax.set(
            xlabel="t / τ",
            ylabel="gain / teacher gain",
            title=f"depth {curve.depth}: per frequency",
        )
        ax.legend(fontsize=7)
        axes[1, col].semilogy(t, curve.loss[s], "-")
        axes[1, col].set(xlabel="t / τ", ylabel="loss", title="stage-like plateaus")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def mimo_figure(curves: MimoCurves, path: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    s = thin(len(curves.t_over_tau))
    t = curves.t_over_tau[s]
    for ax, measured, title in (
        (axes[0], curves.strengths, "aligned balanced init"),
        (axes[1], curves.random_strengths, "random small init"),
    ):
        for i, sv in enumerate(curves.singular_values):
            (line,) = ax.plot(t, measured[s, i], "-", lw=2, alpha=0.6, label=f"s = {sv:g}")
            ax.plot(t, curves.predicted[s, i], "--", color=line.get_color(), lw=1)
        ax.plot([], [], "k--", lw=1, label="deep linear network (logistic)")
        ax.set(xlabel="t / τ", ylabel="u_i / s_i", title=f"MIMO SSM, {title}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
