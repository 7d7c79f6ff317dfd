"""What the two tiers share: method names, LR choice, and the per-run record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from analysis.studies.lora.spectral import rank90

FULL_FT = "full"


def lora_method(rank: int, scope: str = "all") -> str:
    """The name of a LoRA method: ``lora_r16`` (all linear), ``lora_attn_r16``, ``lora_mlp_r16``."""
    return f"lora_r{rank}" if scope == "all" else f"lora_{scope}_r{rank}"


@dataclass
class Checkpoint:
    """One evaluation of a finetuning run."""

    step: int
    target_loss: float
    source_loss: float
    forgetting: float
    rank90: dict[str, int] = field(default_factory=dict)

    def as_dict(self, loss_name: str) -> dict[str, Any]:
        """JSON form; ``loss_name`` is ``loss`` (tier 1, MSE) or ``bpc`` (tier 2)."""
        return {
            "step": self.step,
            f"target_{loss_name}": self.target_loss,
            f"source_{loss_name}": self.source_loss,
            "forgetting": self.forgetting,
            "rank90": self.rank90,
        }


@dataclass
class RunRecord:
    """A finetuning run of one method at one LR, with its checkpoints."""

    method: str
    rank: int | None
    lr: float
    validation_target_loss: float
    trainable_parameters: int
    checkpoints: list[Checkpoint]
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, loss_name: str) -> dict[str, Any]:
        """JSON form."""
        return {
            "method": self.method,
            "rank": self.rank,
            "lr": self.lr,
            f"validation_target_{loss_name}": self.validation_target_loss,
            "trainable_parameters": self.trainable_parameters,
            "checkpoints": [c.as_dict(loss_name) for c in self.checkpoints],
            **self.extra,
        }


def choose_learning_rates(runs: list[RunRecord]) -> dict[str, float]:
    """Per method, the LR with the lowest target loss on the validation split (final step)."""
    best: dict[str, RunRecord] = {}
    for run in runs:
        current = best.get(run.method)
        if current is None or run.validation_target_loss < current.validation_target_loss:
            best[run.method] = run
    return {method: run.lr for method, run in best.items()}


def checkpoint_steps(total_steps: int, count: int) -> list[int]:
    """``count`` evenly spaced steps ending at ``total_steps`` (deduplicated, ascending)."""
    return sorted({max(1, round(total_steps * (i + 1) / count)) for i in range(count)})


def delta_rank90(
    weights: dict[str, torch.Tensor], initial: dict[str, torch.Tensor]
) -> dict[str, int]:
    """rank90 of ``W_ft - W0`` for every module."""
    return {name: rank90(weights[name] - initial[name]) for name in initial}
