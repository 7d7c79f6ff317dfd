"""Tier 1, the mechanism: an MLP student finetuned from a source teacher to a perturbed one.

The student (``f(x) = W2 tanh(W1 x)``, same shape as the teacher) is pretrained by regression on
the source teacher. The target teacher adds to each teacher layer a perturbation of controlled
rank k*. LoRA of rank r can follow a perturbation only as far as r allows, so it should match full
finetuning when k* <= r and learn less (and forget less of the source function) when k* >> r.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from analysis.studies.lora.finetune_common import (
    FULL_FT,
    Checkpoint,
    RunRecord,
    checkpoint_steps,
    choose_learning_rates,
    delta_rank90,
    lora_method,
)
from analysis.studies.lora.lora_layer import apply_lora, linear_weights, trainable_parameter_count
from analysis.studies.lora.params import TeacherParams

logger = logging.getLogger(__name__)

LAYER_NAMES = ("layer1", "layer2")
CONTROL = "control_full"
DTYPE = torch.float64


class TwoLayerMLP(nn.Module):
    """``W2 tanh(W1 x)`` without biases, so a teacher is fully described by two matrices."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layer1 = nn.Linear(dim, dim, bias=False, dtype=DTYPE)
        self.layer2 = nn.Linear(dim, dim, bias=False, dtype=DTYPE)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.layer2(torch.tanh(self.layer1(inputs)))
        return output


@dataclass
class TeacherTask:
    """A pretrained student, the two teachers, and fixed evaluation inputs."""

    student: TwoLayerMLP
    source: TwoLayerMLP
    target: TwoLayerMLP
    validation_inputs: torch.Tensor
    test_inputs: torch.Tensor
    perturbation_rank: int


def _random_teacher(dim: int, generator: torch.Generator, device: str) -> TwoLayerMLP:
    teacher = TwoLayerMLP(dim).to(device)
    with torch.no_grad():
        for layer in (teacher.layer1, teacher.layer2):
            # Unit-variance pre-activations: tanh is in its nonlinear range but not saturated.
            weight = torch.randn(dim, dim, generator=generator, dtype=DTYPE) / dim**0.5
            layer.weight.copy_(weight.to(device))
    return teacher


def perturb(
    teacher: TwoLayerMLP, rank: int, size: float, generator: torch.Generator
) -> TwoLayerMLP:
    """A copy of ``teacher`` with a rank-``rank`` perturbation of relative size ``size``."""
    target = copy.deepcopy(teacher)
    with torch.no_grad():
        for layer in (target.layer1, target.layer2):
            rows, columns = layer.weight.shape
            rank_used = min(rank, rows, columns)
            left = torch.randn(rows, rank_used, generator=generator, dtype=DTYPE)
            right = torch.randn(rank_used, columns, generator=generator, dtype=DTYPE)
            delta = (left @ right).to(layer.weight.device)
            delta *= size * layer.weight.norm() / delta.norm()
            layer.weight.add_(delta)
    return target


def mse(model: nn.Module, teacher: nn.Module, inputs: torch.Tensor) -> float:
    """Mean squared error of ``model`` against ``teacher`` on ``inputs``."""
    with torch.no_grad():
        return float(((model(inputs) - teacher(inputs)) ** 2).mean())


def _regress(
    model: nn.Module,
    teacher: nn.Module,
    steps: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    on_step: Callable[[int], None] | None = None,
    decay: bool = False,
) -> None:
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr / 30)
        if decay
        else None
    )
    dim = next(model.parameters()).shape[1]
    device = next(model.parameters()).device
    for step in range(1, steps + 1):
        # Fresh inputs each step (an infinite data stream); the generator fixes their order.
        inputs = torch.randn(batch_size, dim, generator=generator, dtype=DTYPE).to(device)
        with torch.no_grad():
            labels = teacher(inputs)
        loss = ((model(inputs) - labels) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if on_step is not None:
            on_step(step)


def pretrain_student(
    params: TeacherParams, seed: int, device: str
) -> tuple[TwoLayerMLP, TwoLayerMLP]:
    """The source teacher from ``seed`` and a student pretrained on it by regression."""
    generator = torch.Generator().manual_seed(seed)
    source = _random_teacher(params.dim, generator, device)
    torch.manual_seed(seed + 1)
    student = TwoLayerMLP(params.dim).to(device)
    _regress(
        student,
        source,
        params.pretrain_steps,
        params.pretrain_lr,
        params.batch_size,
        generator,
        decay=True,
    )
    return source, student


def make_task(
    params: TeacherParams,
    source: TwoLayerMLP,
    student: TwoLayerMLP,
    perturbation_rank: int,
    seed: int,
) -> TeacherTask:
    """The target teacher for one k*, and fixed validation and test inputs."""
    target_generator = torch.Generator().manual_seed(seed * 1000 + perturbation_rank)
    target = perturb(source, perturbation_rank, params.perturbation_size, target_generator)
    evaluation = torch.Generator().manual_seed(seed + 2)
    device = next(source.parameters()).device
    validation, test = (
        torch.randn(params.eval_size, params.dim, generator=evaluation, dtype=DTYPE).to(device)
        for _ in range(2)
    )
    return TeacherTask(student, source, target, validation, test, perturbation_rank)


def finetune(
    task: TeacherTask,
    params: TeacherParams,
    lora_rank: int | None,
    lr: float,
    seed: int,
) -> RunRecord:
    """Finetune a copy of the pretrained student on the target teacher with full FT or LoRA."""
    model = copy.deepcopy(task.student)
    initial = linear_weights(model, LAYER_NAMES)
    if lora_rank is not None:
        torch.manual_seed(seed + 3)  # the same A init for every LoRA run of this rank
        apply_lora(model, LAYER_NAMES, lora_rank)
    source_before = mse(task.student, task.source, task.test_inputs)
    wanted = set(checkpoint_steps(params.finetune_steps, params.checkpoints))
    checkpoints: list[Checkpoint] = []

    def evaluate(step: int) -> None:
        if step not in wanted:
            return
        source_loss = mse(model, task.source, task.test_inputs)
        checkpoints.append(
            Checkpoint(
                step=step,
                target_loss=mse(model, task.target, task.test_inputs),
                source_loss=source_loss,
                forgetting=source_loss - source_before,
                rank90=delta_rank90(linear_weights(model, LAYER_NAMES), initial),
            )
        )

    # Every run sees the same stream of inputs: the comparison differs only in the method.
    data = torch.Generator().manual_seed(seed + 4)
    _regress(model, task.target, params.finetune_steps, lr, params.batch_size, data, evaluate)
    return RunRecord(
        method=FULL_FT if lora_rank is None else lora_method(lora_rank),
        rank=lora_rank,
        lr=lr,
        validation_target_loss=mse(model, task.target, task.validation_inputs),
        trainable_parameters=trainable_parameter_count(model),
        checkpoints=checkpoints,
        extra={
            "perturbation_rank": task.perturbation_rank,
            "initial_target_loss": mse(task.student, task.target, task.test_inputs),
            # rank90 of the teacher's own perturbation, in the teacher's coordinates.
            "perturbation_rank90": delta_rank90(
                linear_weights(task.target, LAYER_NAMES), linear_weights(task.source, LAYER_NAMES)
            ),
        },
    )


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run tiny CPU matmuls on one thread: with 64x64 weights, thread sync costs more than it
    saves, and on a busy 2-core machine two threads were measured 15x slower than one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_teacher_study(
    params: TeacherParams,
    seed: int,
    device: str,
    perturbation_ranks: list[int] | None = None,
    methods: list[int | None] | None = None,
    on_run: Callable[[str], None] | None = None,
    control: bool = True,
) -> list[RunRecord]:
    """Every k* x method x LR; ``methods`` lists LoRA ranks, ``None`` meaning full FT."""
    chosen_methods = methods if methods is not None else [None, *params.lora_ranks]
    runs: list[RunRecord] = []
    with single_thread():
        source, student = pretrain_student(params, seed, device)
        for perturbation_rank in perturbation_ranks or params.perturbation_ranks:
            task = make_task(params, source, student, perturbation_rank, seed)
            for lora_rank in chosen_methods:
                for lr in params.full_ft_lrs if lora_rank is None else params.lora_lrs:
                    runs.append(finetune(task, params, lora_rank, lr, seed))
                    if on_run is not None:
                        on_run(f"tier 1: k*={perturbation_rank}, {runs[-1].method}, lr={lr:g}")
        if control:
            # Noise floor: full FT, same steps and fresh data, but on the source teacher itself.
            full_runs = [r for r in runs if r.method == FULL_FT]
            lr = choose_learning_rates(full_runs)[FULL_FT] if full_runs else params.full_ft_lrs[0]
            same_task = TeacherTask(
                student, source, source, task.validation_inputs, task.test_inputs, 0
            )
            record = finetune(same_task, params, None, lr, seed)
            record.method = CONTROL
            runs.append(record)
            if on_run is not None:
                on_run(f"tier 1: control (full FT on the source teacher), lr={lr:g}")
    return runs
