"""Tier 2's whole experiment: LR sweeps per method, module variants, control, and spectra."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from analysis.studies.lora.corpus import load_corpora
from analysis.studies.lora.finetune_common import (
    FULL_FT,
    RunRecord,
    choose_learning_rates,
    lora_method,
)
from analysis.studies.lora.language_model import (
    EvaluationSets,
    FinetuneOutcome,
    bits_per_character,
    finetune,
    pretrain,
)
from analysis.studies.lora.lm_data import make_language_data
from analysis.studies.lora.params import LanguageModelParams
from analysis.studies.lora.spectral import rank_at_energy, singular_values

logger = logging.getLogger(__name__)


@dataclass
class LanguageModelOutcome:
    """JSON-ready metrics plus the singular values the spectra figure needs."""

    metrics: dict[str, Any]
    runs: list[RunRecord]
    spectra: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


def planned_runs(params: LanguageModelParams) -> int:
    """How many finetuning runs the experiment makes (for progress reporting)."""
    sweeps = len(params.full_ft_lrs) + len(params.lora_ranks) * len(params.lora_lrs)
    variants = 2 if params.module_variant_rank is not None else 0
    return sweeps + variants + 1  # + the control


def run_language_model_study(
    params: LanguageModelParams,
    seed: int,
    device: str,
    on_run: Callable[[str], None] | None = None,
) -> LanguageModelOutcome:
    """Pretrain once, then finetune every method x LR, the module variants and the control."""

    def report(message: str) -> None:
        logger.info("tier 2: %s", message)
        if on_run is not None:
            on_run(f"tier 2: {message}")

    corpora = load_corpora(params.corpus_max_files)
    data = make_language_data(corpora, params.code_chars, device)
    evaluation = EvaluationSets.build(data, params.eval_sequences, params.context)
    base = pretrain(data, params, seed, device)
    base_source = bits_per_character(base, evaluation.prose_test)
    base_target = bits_per_character(base, evaluation.code_test)
    logger.info("tier 2: pretrained; prose bpc %.3f, code bpc %.3f", base_source, base_target)

    outcomes: dict[tuple[str, float], FinetuneOutcome] = {}

    def finetune_and_keep(
        lora_rank: int | None, lr: float, scope: str = "all", on_source: bool = False
    ) -> FinetuneOutcome:
        outcome = finetune(
            base, data, evaluation, params, lora_rank, lr, seed, scope=scope, on_source=on_source
        )
        outcomes[(outcome.record.method, lr)] = outcome
        final = outcome.record.checkpoints[-1]
        report(
            f"{outcome.record.method} lr={lr:g}: code bpc {final.target_loss:.3f}, "
            f"forgetting {final.forgetting:+.3f}"
        )
        return outcome

    for lr in params.full_ft_lrs:
        finetune_and_keep(None, lr)
    for rank in params.lora_ranks:
        for lr in params.lora_lrs:
            finetune_and_keep(rank, lr)
    chosen = choose_learning_rates([o.record for o in outcomes.values()])
    if params.module_variant_rank is not None:
        # The variants reuse the all-linear LR of their rank (tuned when that rank is swept).
        variant_lr = chosen.get(lora_method(params.module_variant_rank), params.lora_lrs[-1])
        for scope in ("attn", "mlp"):
            finetune_and_keep(params.module_variant_rank, variant_lr, scope=scope)
            chosen[lora_method(params.module_variant_rank, scope)] = variant_lr
    control = finetune_and_keep(None, chosen[FULL_FT], on_source=True)
    full = outcomes[(FULL_FT, chosen[FULL_FT])]

    generator = torch.Generator().manual_seed(seed + 40)
    random_spectra = {
        name: singular_values(torch.randn(*delta.shape, generator=generator, dtype=torch.float64))
        for name, delta in full.deltas.items()
    }
    spectra = {
        "full FT (code)": _spectra(full.deltas),
        "control: full FT (prose)": _spectra(control.deltas),
        "random Gaussian": random_spectra,
    }
    largest_lora = max(params.lora_ranks)
    if (lora_method(largest_lora), chosen.get(lora_method(largest_lora))) in outcomes:
        best_lora = outcomes[(lora_method(largest_lora), chosen[lora_method(largest_lora)])]
        spectra[f"LoRA r={largest_lora} (code)"] = _spectra(best_lora.deltas)

    runs = [o.record for o in outcomes.values()]
    metrics = {
        "base_source_bpc": base_source,
        "base_target_bpc": base_target,
        "chosen_lrs": chosen,
        "runs": [run.as_dict("bpc") for run in runs],
        "random_baseline_rank90": {n: rank_at_energy(v) for n, v in random_spectra.items()},
        "control_rank90": control.record.checkpoints[-1].rank90,
        "full_ft_rank90": full.record.checkpoints[-1].rank90,
        "module_min_dim": {name: min(delta.shape) for name, delta in full.deltas.items()},
        "rank_over_width": {str(r): r / params.d_model for r in params.lora_ranks},
        "singular_values": {
            label: {name: [round(float(v), 6) for v in values] for name, values in modules.items()}
            for label, modules in spectra.items()
            if label != "random Gaussian"
        },
    }
    return LanguageModelOutcome(metrics, runs, spectra)


def _spectra(deltas: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: singular_values(delta) for name, delta in deltas.items()}
