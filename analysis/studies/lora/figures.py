"""The study's figures: learning–forgetting Pareto plots and ΔW spectra."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes

from analysis.studies.lora.finetune_common import RunRecord


def _method_order(method: str) -> tuple[int, int, str]:
    if method.startswith("control"):
        return (2, 0, method)
    if method == "full":
        return (0, 0, method)
    return (1, int(method.rsplit("r", 1)[-1]), method)


def _pareto_panel(
    axes: Axes,
    runs: list[RunRecord],
    chosen: dict[str, float],
    target_label: str,
    pretrained_target: float | None = None,
) -> None:
    methods = sorted(
        {r.method for r in runs if not r.method.startswith("control")}, key=_method_order
    )
    colours = plt.get_cmap("viridis")(torch.linspace(0, 0.9, max(1, len(methods))).tolist())
    for colour, method in zip(colours, methods, strict=True):
        for run in (r for r in runs if r.method == method):
            is_chosen = chosen.get(method) == run.lr
            targets = [c.target_loss for c in run.checkpoints]
            forgetting = [c.forgetting for c in run.checkpoints]
            colour_used = "black" if method == "full" else colour
            axes.plot(
                targets,
                forgetting,
                marker="o" if is_chosen else ".",
                color=colour_used,
                alpha=1.0 if is_chosen else 0.3,
                linewidth=2 if is_chosen else 1,
                label=f"{method} (lr {run.lr:g})" if is_chosen else None,
            )
            # The last checkpoint is the longest training; mark it so direction is readable.
            axes.scatter(
                targets[-1:],
                forgetting[-1:],
                marker="s",
                color=colour_used,
                alpha=1.0 if is_chosen else 0.3,
                s=25,
            )
    if pretrained_target is not None:
        axes.scatter([pretrained_target], [0.0], marker="*", s=120, color="red", label="pretrained")
    axes.set_xlabel(f"{target_label} (lower = learned more)")
    axes.set_ylabel("forgetting: rise of source loss (lower = forgot less)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)


def plot_teacher_pareto(
    runs: list[RunRecord], chosen: dict[int, dict[str, float]], path: Path
) -> None:
    """One learning–forgetting panel per teacher perturbation rank k*."""
    ranks = sorted(chosen)
    figure, axes_row = plt.subplots(1, len(ranks), figsize=(5 * len(ranks), 4.2), squeeze=False)
    for axes, rank in zip(axes_row[0], ranks, strict=True):
        subset = [r for r in runs if r.extra.get("perturbation_rank") == rank]
        initial = subset[0].extra.get("initial_target_loss") if subset else None
        _pareto_panel(axes, subset, chosen[rank], "target MSE", initial)
        axes.set_title(f"tier 1: teacher perturbation rank k* = {rank}")
    figure.suptitle("MLP teacher–student: lines run through checkpoints (square = last)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_language_pareto(
    runs: list[RunRecord], chosen: dict[str, float], pretrained_target: float, path: Path
) -> None:
    """Learning (code bpc) against forgetting (prose bpc rise) for tier 2."""
    figure, axes = plt.subplots(figsize=(7, 5))
    _pareto_panel(axes, runs, chosen, "held-out code bits per character", pretrained_target)
    axes.set_title("tier 2: char GPT, prose → code; faded = other LRs, square = last checkpoint")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_spectra(
    spectra: dict[str, dict[str, torch.Tensor]],
    path: Path,
    rank_marks: list[int] | None = None,
) -> None:
    """Cumulative ΔW energy against k for the first and last layer's modules."""
    module_names = list(next(iter(spectra.values())))
    layers = sorted({name.split(".")[1] for name in module_names}, key=int)
    shown_layers = [layers[0], layers[-1]] if len(layers) > 1 else layers
    kinds = list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in module_names))
    figure, grid = plt.subplots(
        len(shown_layers),
        len(kinds),
        figsize=(2.8 * len(kinds), 2.6 * len(shown_layers)),
        squeeze=False,
        sharey=True,
    )
    for row, layer in enumerate(shown_layers):
        for column, kind in enumerate(kinds):
            axes = grid[row][column]
            name = f"blocks.{layer}.{kind}"
            for label, modules in spectra.items():
                values = modules[name].to(torch.float64) ** 2
                energy = torch.cumsum(values, 0) / values.sum().clamp_min(1e-300)
                axes.plot(range(1, len(energy) + 1), energy.tolist(), label=label)
            axes.axhline(0.9, color="grey", linestyle="--", linewidth=0.8)
            for mark in rank_marks or []:
                axes.axvline(mark, color="grey", linestyle=":", linewidth=0.6)
            axes.set_title(name, fontsize=9)
            axes.set_xscale("log")
            if column == 0:
                axes.set_ylabel("cumulative Σσ² fraction")
            if row == len(shown_layers) - 1:
                axes.set_xlabel("k (singular directions)")
    grid[0][0].legend(fontsize=6, loc="lower right")
    figure.suptitle("ΔW = W_ft − W0 spectra; dashed: 90% (rank90), dotted: LoRA ranks")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
