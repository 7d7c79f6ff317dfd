"""A hand-written LoRA linear layer: ``W = W0 + (alpha / r) * B @ A`` with ``B = 0`` at init.

Why not ``peft``: the GPU script must run with torch alone, the study needs the exact update
``(alpha / r) * B @ A`` of every module for its spectra, and wrapping each of dozens of short runs
in a ``PeftModel`` costs more than the runs' own set-up. The math is the same as peft's
``lora.Linear`` (kaiming-uniform ``A``, zero ``B``, scale ``alpha / r``); a test checks that the two
give identical outputs for the same ``A`` and ``B``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``rank`` update ``scale * B @ A``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank: must be >= 1, got {rank}")
        self.base = base
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        self.rank = rank
        # alpha = 2r (the choice, also the paper's) makes the scale 2 at every rank.
        self.scale = (2.0 * rank if alpha is None else alpha) / rank
        weight = base.weight
        self.lora_a = nn.Parameter(
            torch.empty(rank, base.in_features, dtype=weight.dtype, device=weight.device)
        )
        self.lora_b = nn.Parameter(
            torch.zeros(base.out_features, rank, dtype=weight.dtype, device=weight.device)
        )
        # peft's default init of A: kaiming-uniform with a = sqrt(5), as nn.Linear's weight.
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        update = (inputs @ self.lora_a.T) @ self.lora_b.T
        output: torch.Tensor = self.base(inputs) + self.scale * update
        return output

    def delta_weight(self) -> torch.Tensor:
        """The update this layer adds to the base weight, ``scale * B @ A``."""
        return self.scale * (self.lora_b @ self.lora_a)


def apply_lora(
    model: nn.Module, target_names: Iterable[str], rank: int, alpha: float | None = None
) -> list[str]:
    """Freeze ``model`` and wrap every ``nn.Linear`` whose attribute name is in ``target_names``.

    Returns the dotted paths of the wrapped modules. Only the LoRA factors stay trainable:
    embeddings, norms, biases and the output head are frozen, as in the paper.
    """
    targets = set(target_names)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    wrapped: list[str] = []
    for parent_path, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, rank, alpha))
                wrapped.append(f"{parent_path}.{name}" if parent_path else name)
    if not wrapped:
        raise ValueError(f"target_names: no nn.Linear named any of {sorted(targets)}")
    return wrapped


def linear_weights(model: nn.Module, target_names: Iterable[str]) -> dict[str, torch.Tensor]:
    """The effective weight of every target linear layer (base + LoRA update where wrapped)."""
    targets = set(target_names)
    weights: dict[str, torch.Tensor] = {}
    for path, module in model.named_modules():
        name = path.rsplit(".", 1)[-1]
        if name not in targets:
            continue
        if isinstance(module, LoRALinear):
            weights[path] = (module.base.weight + module.delta_weight()).detach().clone()
        elif isinstance(module, nn.Linear):
            weights[path] = module.weight.detach().clone()
    return weights


def trainable_parameter_count(model: nn.Module) -> int:
    """How many scalars the optimizer updates."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
