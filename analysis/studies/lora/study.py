"""The study's entry point: run both tiers, write the figures, summarise the claims."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from analysis.studies.base import Progress, StudyResult
from analysis.studies.lora import figures
from analysis.studies.lora.finetune_common import FULL_FT, RunRecord, choose_learning_rates
from analysis.studies.lora.language_study import planned_runs, run_language_model_study
from analysis.studies.lora.params import Params, TeacherParams
from analysis.studies.lora.spectral import random_matrix_rank90
from analysis.studies.lora.teacher import CONTROL, run_teacher_study

logger = logging.getLogger(__name__)

WHAT_EACH_METHOD_UPDATES = {
    "full": "every parameter: token and position embeddings, LayerNorm gains and biases, all "
    "linear weights and biases, the output head",
    "lora": "only the LoRA factors A and B of the targeted linear layers; embeddings, norms, "
    "biases and the head stay at their pretrained values",
}


def _teacher_run_count(params: TeacherParams) -> int:
    per_rank = len(params.full_ft_lrs) + len(params.lora_ranks) * len(params.lora_lrs)
    return per_rank * len(params.perturbation_ranks) + 1  # + the control


def _final(runs: list[RunRecord], method: str, lr: float) -> RunRecord:
    return next(r for r in runs if r.method == method and r.lr == lr)


def teacher_metrics(
    params: Params, runs: list[RunRecord]
) -> tuple[dict[str, Any], dict[int, dict[str, float]]]:
    """Tier 1's result section: runs, chosen LRs per k*, references for rank90, the claims."""
    teacher = params.teacher
    chosen: dict[int, dict[str, float]] = {}
    comparisons = []
    for k in teacher.perturbation_ranks:
        subset = [r for r in runs if r.extra["perturbation_rank"] == k and r.method != CONTROL]
        chosen[k] = choose_learning_rates(subset)
        full = _final(subset, FULL_FT, chosen[k][FULL_FT]).checkpoints[-1]
        for method, lr in chosen[k].items():
            final = _final(subset, method, lr).checkpoints[-1]
            comparisons.append(
                {
                    "perturbation_rank": k,
                    "method": method,
                    "lr": lr,
                    "target_loss": final.target_loss,
                    "forgetting": final.forgetting,
                    "learns_less_than_full": final.target_loss > full.target_loss,
                    "forgets_less_than_full": final.forgetting < full.forgetting,
                    "rank90": final.rank90,
                }
            )
    control = next(r for r in runs if r.method == CONTROL)
    return {
        "runs": [r.as_dict("loss") for r in runs],
        "control_rank90": control.checkpoints[-1].rank90,
        "perturbation_rank90": {
            str(k): next(r for r in runs if r.extra["perturbation_rank"] == k).extra[
                "perturbation_rank90"
            ]
            for k in teacher.perturbation_ranks
        },
        "chosen_lrs": {str(k): v for k, v in chosen.items()},
        "comparison_at_chosen_lrs": comparisons,
        "random_baseline_rank90": random_matrix_rank90(teacher.dim, teacher.dim, params.seed),
        "rank_over_width": {str(r): r / teacher.dim for r in teacher.lora_ranks},
    }, chosen


def _language_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    chosen: dict[str, float] = metrics["chosen_lrs"]
    finals = {}
    for run in metrics["runs"]:
        if chosen.get(run["method"]) == run["lr"] or run["method"].startswith("control"):
            final = run["checkpoints"][-1]
            finals[run["method"]] = {
                "target_bpc": final["target_bpc"],
                "forgetting": final["forgetting"],
                "mean_rank90": sum(final["rank90"].values()) / len(final["rank90"]),
            }
    full = finals[FULL_FT]
    return {
        "final_at_chosen_lrs": finals,
        "lora_learns_less": {
            m: v["target_bpc"] > full["target_bpc"]
            for m, v in finals.items()
            if m.startswith("lora")
        },
        "lora_forgets_less": {
            m: v["forgetting"] < full["forgetting"]
            for m, v in finals.items()
            if m.startswith("lora")
        },
        "full_ft_rank90_over_random": {
            name: metrics["full_ft_rank90"][name] / metrics["random_baseline_rank90"][name]
            for name in metrics["full_ft_rank90"]
        },
    }


def run(params: Params, progress: Progress, out_dir: Path) -> StudyResult:
    """Run tier 1 (teacher–student) and tier 2 (character LM), save figures, return metrics."""
    total = (_teacher_run_count(params.teacher) if params.run_teacher else 0) + (
        planned_runs(params.language_model) if params.run_language_model else 0
    )
    done = 0

    def advance(message: str) -> None:
        nonlocal done
        done += 1
        progress(done, total, message)

    metrics: dict[str, Any] = {
        "seeds": {
            "seed": params.seed,
            "note": "every generator derives from this seed with fixed offsets; finetuning "
            "batches use one generator seed for all methods (same data order)",
        },
        "what_each_method_updates": WHAT_EACH_METHOD_UPDATES,
        "runs": [],
        "chosen_lrs": {},
    }
    figure_names: list[str] = []
    if params.run_teacher:
        teacher_runs = run_teacher_study(params.teacher, params.seed, params.device, on_run=advance)
        tier1, chosen_by_rank = teacher_metrics(params, teacher_runs)
        metrics["tier1"] = tier1
        metrics["chosen_lrs"]["tier1"] = tier1["chosen_lrs"]
        metrics["runs"].extend({"tier": 1, **run} for run in tier1["runs"])
        # Overwritten by tier 2's (the language model's) references when tier 2 runs.
        metrics["random_baseline_rank90"] = tier1["random_baseline_rank90"]
        metrics["control_rank90"] = tier1["control_rank90"]
        figures.plot_teacher_pareto(teacher_runs, chosen_by_rank, out_dir / "lora_tier1_pareto.png")
        figure_names.append("lora_tier1_pareto.png")
    if params.run_language_model:
        outcome = run_language_model_study(
            params.language_model, params.seed, params.device, on_run=advance
        )
        tier2 = outcome.metrics
        tier2["summary"] = _language_summary(tier2)
        metrics["tier2"] = tier2
        metrics["chosen_lrs"]["tier2"] = tier2["chosen_lrs"]
        metrics["runs"].extend({"tier": 2, **run} for run in tier2["runs"])
        metrics["random_baseline_rank90"] = tier2["random_baseline_rank90"]
        metrics["control_rank90"] = tier2["control_rank90"]
        figures.plot_language_pareto(
            outcome.runs,
            tier2["chosen_lrs"],
            tier2["base_target_bpc"],
            out_dir / "lora_tier2_pareto.png",
        )
        figures.plot_spectra(
            outcome.spectra,
            out_dir / "lora_spectra.png",
            rank_marks=params.language_model.lora_ranks,
        )
        figure_names += ["lora_tier2_pareto.png", "lora_spectra.png"]
    return StudyResult(
        study="lora", params=params.model_dump(), metrics=metrics, figures=figure_names
    )
