"""Matplotlib figures (Agg backend) for the four experiments; each returns its file name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter, ScalarFormatter

ARM_LABELS = {
    "cholesky": "Cholesky",
    "cg": "CG",
    "rr_cg": "RR-CG",
    "rff": "RFF",
    "rr_rff": "SS-RFF",
    "rff_own_predictive": "RFF (own predictive)",
}
ARM_COLORS = {
    "cholesky": "black",
    "cg": "tab:blue",
    "rr_cg": "tab:orange",
    "rff": "tab:green",
    "rr_rff": "tab:red",
    "rff_own_predictive": "tab:olive",
}


def _save(figure: Any, out_dir: Path, name: str) -> str:
    figure.tight_layout()
    figure.savefig(out_dir / name, dpi=110)
    plt.close(figure)
    return name


def bias_figure(table: dict[str, Any], out_dir: Path) -> str:
    """Bias of y^T K^-1 y and log|K| against budget: CG/RR-CG over J, RFF/RR-RFF over D."""
    rows = table["rows"]
    figure, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [
        (axes[0, 0], ("cg", "rr_cg"), "quadratic", "CG iterations J"),
        (axes[0, 1], ("cg", "rr_cg"), "logdet", "CG iterations J"),
        (axes[1, 0], ("rff", "rr_rff"), "quadratic", "random features D"),
        (axes[1, 1], ("rff", "rr_rff"), "logdet", "random features D"),
    ]
    for axis, (fixed, randomized), term, xlabel in panels:
        key = "logdet_paired" if term == "logdet" and fixed == "cg" else term
        for arm in (fixed, randomized):
            chosen = [row for row in rows if row["estimator"] == arm]
            budgets = [row["budget"] for row in chosen]
            biases = [row[f"{key}_bias"] for row in chosen]
            errors = [2 * row[f"{key}_se"] for row in chosen]
            axis.errorbar(
                budgets,
                biases,
                yerr=errors,
                marker="o" if arm == fixed else "s",
                linestyle="-" if arm == fixed else "none",
                color=ARM_COLORS[arm],
                label=f"{ARM_LABELS[arm]} (±2 SE)",
                capsize=3,
            )
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        fixed_budgets = [row["budget"] for row in rows if row["estimator"] == fixed]
        axis.set_xticks(fixed_budgets, [f"{budget:g}" for budget in fixed_budgets])
        axis.set_yscale("symlog", linthresh=1.0)
        axis.set_xlabel(xlabel)
        title = "y^T K^-1 y" if term == "quadratic" else "log |K|"
        axis.set_ylabel(f"bias of {title}")
        axis.legend(fontsize=8)
    figure.suptitle(f"Estimator bias at the true hyperparameters (n = {table['n']})")
    return _save(figure, out_dir, "bias.png")


def recovery_figure(recovery: dict[str, Any], out_dir: Path) -> str:
    """Lengthscale and noise errors per arm and true lengthscale, and exact-NLL trajectories."""
    lengthscales = recovery["true_lengthscales"]
    arms = list(recovery["arms"])
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    width = 0.8 / len(arms)
    for panel, key, label in (
        (axes[0], "log_lengthscale_sq_error", "log(l_hat^2 / l_opt^2)"),
        (axes[1], "log_noise_error", "log(noise_hat / noise_opt)"),
    ):
        for index, arm in enumerate(arms):
            positions = [
                i + (index - (len(arms) - 1) / 2) * width for i in range(len(lengthscales))
            ]
            panel.bar(
                positions,
                recovery["arms"][arm][key],
                width,
                color=ARM_COLORS[arm],
                label=ARM_LABELS[arm],
            )
        panel.axhline(0.0, color="black", linewidth=0.8)
        panel.set_xticks(range(len(lengthscales)), [f"l = {value}" for value in lengthscales])
        panel.set_ylabel(label)
        panel.legend(fontsize=8)
    axes[0].set_title("lengthscale error vs the Cholesky optimum")
    axes[1].set_title("noise error vs the Cholesky optimum")
    curves = recovery["trajectories"][len(recovery["trajectories"]) // 2]
    optimum = recovery["cholesky_optimum"][len(recovery["trajectories"]) // 2]["exact_nll"]
    for arm in arms:
        axes[2].plot(
            curves[arm]["steps"],
            curves[arm]["exact_nll"],
            color=ARM_COLORS[arm],
            label=ARM_LABELS[arm],
        )
    axes[2].axhline(optimum, color="gray", linestyle="--", label="Cholesky optimum")
    axes[2].set_yscale("symlog", linthresh=1.0)
    axes[2].set_xlabel("Adam step")
    axes[2].set_ylabel("exact NLL per point")
    axes[2].set_title(f"trajectories, true l = {curves['true_lengthscale']}")
    axes[2].legend(fontsize=8)
    return _save(figure, out_dir, "recovery.png")


def test_figure(metrics: dict[str, Any], out_dir: Path) -> str:
    """Held-out RMSE and NLL (mean ± std over seeds) per data set and arm."""
    datasets = metrics["datasets"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = list(datasets)
    arms = list(next(iter(datasets.values())))
    width = 0.8 / len(arms)
    for panel, key in ((axes[0], "rmse"), (axes[1], "nll")):
        for index, arm in enumerate(arms):
            positions = [i + (index - (len(arms) - 1) / 2) * width for i in range(len(names))]
            panel.bar(
                positions,
                [datasets[name][arm][f"{key}_mean"] for name in names],
                width,
                yerr=[datasets[name][arm][f"{key}_std"] for name in names],
                color=ARM_COLORS[arm],
                label=ARM_LABELS[arm],
                capsize=3,
            )
        panel.set_xticks(range(len(names)), names)
        panel.set_ylabel(f"test {key.upper()} (standardized y)")
        panel.legend(fontsize=8)
    figure.suptitle(f"Held-out metrics over seeds {metrics['seeds']}")
    return _save(figure, out_dir, "test_metrics.png")


def timing_figure(timing: dict[str, Any], out_dir: Path, device_name: str) -> str:
    """Seconds per optimizer step against n, log-log."""
    figure, axis = plt.subplots(figsize=(6, 4))
    sizes = timing["sizes"]
    arms = list(timing["per_n"][str(sizes[0])])
    for arm in arms:
        points = [
            (n, timing["per_n"][str(n)][arm]["seconds_per_step"])
            for n in sizes
            if timing["per_n"][str(n)][arm]["seconds_per_step"] is not None
        ]
        axis.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            color=ARM_COLORS[arm],
            label=ARM_LABELS[arm],
        )
    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(ScalarFormatter())
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xticks(sizes, [str(n) for n in sizes])
    axis.set_yscale("log")
    axis.set_xlabel("n")
    axis.set_ylabel("seconds per optimizer step")
    crossover = timing["crossover_n"]
    axis.set_title(f"{device_name}; RR-CG faster from n = {crossover}", fontsize=9)
    axis.legend(fontsize=8)
    return _save(figure, out_dir, "timing.png")
