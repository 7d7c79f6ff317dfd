"""Tier 2: pretrain a character GPT on prose, finetune it on code with full FT or LoRA.

Learning is the held-out code bits per character (bpc); forgetting is how much the held-out
prose bpc rose above the pretrained model's. Every finetuning run takes the same number of steps
on the same batches (one generator seed) and is evaluated on the same windows.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from analysis.studies.lora.char_gpt import ALL_LINEAR_MODULES, MODULE_SCOPES, CharGPT
from analysis.studies.lora.char_gpt import next_character_loss as batch_loss
from analysis.studies.lora.corpus import VOCABULARY_SIZE
from analysis.studies.lora.finetune_common import (
    FULL_FT,
    Checkpoint,
    RunRecord,
    checkpoint_steps,
    delta_rank90,
    lora_method,
)
from analysis.studies.lora.lm_data import LanguageData, evaluation_windows, sample_windows
from analysis.studies.lora.lora_layer import apply_lora, linear_weights, trainable_parameter_count
from analysis.studies.lora.params import LanguageModelParams

EVALUATION_BATCH = 64
GRADIENT_CLIP = 1.0


@dataclass(frozen=True)
class EvaluationSets:
    """Fixed windows: prose and code, validation and test."""

    prose_validation: torch.Tensor
    prose_test: torch.Tensor
    code_validation: torch.Tensor
    code_test: torch.Tensor

    @classmethod
    def build(cls, data: LanguageData, count: int, context: int) -> EvaluationSets:
        """The first ``count`` evenly spaced windows of each held-out split."""
        return cls(
            *(
                evaluation_windows(tokens, count, context)
                for tokens in (
                    data.prose.validation,
                    data.prose.test,
                    data.code.validation,
                    data.code.test,
                )
            )
        )


@dataclass
class FinetuneOutcome:
    """A run's record plus its final per-module ``W_ft - W0`` (kept for the spectra)."""

    record: RunRecord
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)


def bits_per_character(model: torch.nn.Module, windows: torch.Tensor) -> float:
    """Mean next-character cross-entropy over ``windows``, in bits."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in torch.split(windows, EVALUATION_BATCH):
            total += float(batch_loss(model, batch)) * len(batch)
            count += len(batch)
    model.train(was_training)
    return total / count / math.log(2)


def _train(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    params: LanguageModelParams,
    steps: int,
    lr: float,
    generator: torch.Generator,
    cosine: bool,
    on_step: Callable[[int], None] | None = None,
) -> None:
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine:
            # Constant after warm-up, so each checkpoint is a valid shorter training duration.
            return 1.0
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    for step in range(1, steps + 1):
        windows = sample_windows(tokens, params.batch_size, params.context, generator)
        loss = batch_loss(model, windows)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        torch.nn.utils.clip_grad_norm_(parameters, GRADIENT_CLIP)
        optimizer.step()
        scheduler.step()
        if on_step is not None:
            on_step(step)


def pretrain(data: LanguageData, params: LanguageModelParams, seed: int, device: str) -> CharGPT:
    """A character GPT trained on the prose training split."""
    torch.manual_seed(seed)
    model = CharGPT(
        VOCABULARY_SIZE, params.d_model, params.n_layers, params.n_heads, params.context
    ).to(device=device, dtype=getattr(torch, params.dtype))
    generator = torch.Generator().manual_seed(seed + 10)
    _train(
        model, data.prose.train, params, params.pretrain_steps, params.pretrain_lr, generator, True
    )
    return model


def finetune(
    base: CharGPT,
    data: LanguageData,
    evaluation: EvaluationSets,
    params: LanguageModelParams,
    lora_rank: int | None,
    lr: float,
    seed: int,
    scope: str = "all",
    on_source: bool = False,
) -> FinetuneOutcome:
    """Finetune a copy of ``base`` on code (or, for the noise-floor control, on more prose)."""
    model = copy.deepcopy(base)
    initial = linear_weights(model, ALL_LINEAR_MODULES)
    if lora_rank is not None:
        torch.manual_seed(seed + 20)  # the same A init for every LoRA run of a given rank
        apply_lora(model, MODULE_SCOPES[scope], lora_rank)
    source_before = bits_per_character(base, evaluation.prose_test)
    wanted = set(checkpoint_steps(params.finetune_steps, params.checkpoints))
    checkpoints: list[Checkpoint] = []

    def evaluate(step: int) -> None:
        if step not in wanted:
            return
        source_bpc = bits_per_character(model, evaluation.prose_test)
        deltas = delta_rank90(linear_weights(model, ALL_LINEAR_MODULES), initial)
        checkpoints.append(
            Checkpoint(
                step=step,
                target_loss=bits_per_character(model, evaluation.code_test),
                source_loss=source_bpc,
                forgetting=source_bpc - source_before,
                # Modules LoRA did not touch have a zero update, hence rank 0.
                rank90=deltas,
            )
        )

    # One seed for every run: all methods see the same batches in the same order.
    generator = torch.Generator().manual_seed(seed + 30)
    tokens = data.prose.train if on_source else data.code.train
    _train(model, tokens, params, params.finetune_steps, lr, generator, False, evaluate)
    method = FULL_FT if lora_rank is None else lora_method(lora_rank, scope)
    if on_source:
        method = "control_" + method
    final = linear_weights(model, ALL_LINEAR_MODULES)
    record = RunRecord(
        method=method,
        rank=lora_rank,
        lr=lr,
        validation_target_loss=bits_per_character(model, evaluation.code_validation),
        trainable_parameters=trainable_parameter_count(model),
        checkpoints=checkpoints,
        extra={"scope": scope if lora_rank is not None else "everything"},
    )
    deltas = {name: (final[name] - initial[name]).cpu() for name in initial}
    return FinetuneOutcome(record, deltas)
