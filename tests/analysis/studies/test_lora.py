"""Tests of the LoRA sidecar study: the spectral measure, the LoRA layer, corpora, and claims."""

from __future__ import annotations

import ast
import io
import json
import tokenize
from pathlib import Path

import pytest
import torch
from torch import nn

from analysis.studies.base import run_study
from analysis.studies.lora import Params
from analysis.studies.lora.corpus import (
    extract_docstrings,
    load_corpora,
    stdlib_python_files,
    strip_docstrings_and_comments,
)
from analysis.studies.lora.finetune_common import FULL_FT, checkpoint_steps, choose_learning_rates
from analysis.studies.lora.lora_layer import LoRALinear, apply_lora, trainable_parameter_count
from analysis.studies.lora.params import LanguageModelParams, TeacherParams
from analysis.studies.lora.spectral import random_matrix_rank90, rank90, rank_at_energy
from analysis.studies.lora.teacher import run_teacher_study


def _matrix_with_singular_values(values: list[float], rows: int, columns: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    left, _ = torch.linalg.qr(torch.randn(rows, rows, generator=generator, dtype=torch.float64))
    right, _ = torch.linalg.qr(
        torch.randn(columns, columns, generator=generator, dtype=torch.float64)
    )
    diagonal = torch.zeros(rows, columns, dtype=torch.float64)
    for index, value in enumerate(values):
        diagonal[index, index] = value
    matrix: torch.Tensor = left @ diagonal @ right.T
    return matrix


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([4.0, 2.0, 1.0, 1.0], 2),  # energies 16, 4, 1, 1: 16 < 19.8 <= 20
        ([1.0] * 10, 9),  # equal energies: 9 of 10 reach exactly 90%
        ([3.0, 0.0, 0.0], 1),
        ([10.0, 3.0, 1.0], 1),  # 100 of 110 = 0.909
    ],
)
def test_rank90_of_a_matrix_with_known_singular_values(values: list[float], expected: int) -> None:
    assert rank90(_matrix_with_singular_values(values, 12, 10)) == expected


def test_rank_at_energy_edges() -> None:
    assert rank_at_energy(torch.zeros(5)) == 0
    assert rank_at_energy(torch.tensor([2.0, 1.0]), energy=1.0) == 2
    with pytest.raises(ValueError, match="energy"):
        rank_at_energy(torch.ones(3), energy=0.0)


def test_random_square_matrix_rank90_is_about_half_its_size() -> None:
    # The reference value: ~0.51 n for a square Gaussian matrix.
    assert 0.47 * 200 <= random_matrix_rank90(200, 200, seed=1) <= 0.55 * 200


def test_lora_layer_equals_base_layer_at_init() -> None:
    torch.manual_seed(0)
    base = nn.Linear(16, 8, dtype=torch.float64)
    lora = LoRALinear(base, rank=4)
    inputs = torch.randn(5, 16, dtype=torch.float64)
    assert torch.equal(lora(inputs), base(inputs))
    assert lora.scale == 2.0  # alpha = 2r
    assert not torch.equal(lora.lora_a, torch.zeros_like(lora.lora_a))  # only B starts at zero


@pytest.mark.parametrize("rank", [1, 3, 8])
def test_lora_update_has_rank_at_most_r(rank: int) -> None:
    torch.manual_seed(rank)
    lora = LoRALinear(nn.Linear(32, 24, dtype=torch.float64), rank=rank)
    optimizer = torch.optim.SGD([lora.lora_a, lora.lora_b], lr=0.1)
    inputs, targets = torch.randn(64, 32, dtype=torch.float64), torch.randn(64, 24)
    for _ in range(5):
        loss = ((lora(inputs) - targets) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    delta = lora.delta_weight().detach()
    assert delta.abs().max() > 0  # training moved it
    assert int(torch.linalg.matrix_rank(delta)) == rank
    assert rank90(delta) <= rank


def test_apply_lora_freezes_everything_but_the_factors() -> None:
    model = nn.Sequential()
    model.add_module("q", nn.Linear(8, 8))
    model.add_module("norm", nn.LayerNorm(8))
    model.add_module("head", nn.Linear(8, 3))
    full_count = trainable_parameter_count(model)
    wrapped = apply_lora(model, ["q"], rank=2)
    assert wrapped == ["q"]
    assert trainable_parameter_count(model) == 2 * 8 + 8 * 2 < full_count
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        apply_lora(nn.Sequential(nn.ReLU()), ["q"], rank=2)


def test_lora_layer_computes_what_peft_computes() -> None:
    peft = pytest.importorskip("peft")

    class OneLinear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = nn.Linear(12, 6)

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            output: torch.Tensor = self.q(inputs)
            return output

    torch.manual_seed(0)
    model = OneLinear()
    ours = LoRALinear(nn.Linear(12, 6), rank=3)
    ours.base.load_state_dict(model.q.state_dict())
    wrapped = peft.get_peft_model(
        model, peft.LoraConfig(r=3, lora_alpha=6, target_modules=["q"], lora_dropout=0.0)
    )
    layer = wrapped.base_model.model.q
    with torch.no_grad():
        ours.lora_b.normal_()
        layer.lora_A["default"].weight.copy_(ours.lora_a)
        layer.lora_B["default"].weight.copy_(ours.lora_b)
    inputs = torch.randn(4, 12)
    torch.testing.assert_close(ours(inputs), wrapped(inputs))


def test_stripping_removes_docstrings_and_comments_and_keeps_valid_python() -> None:
    source = (
        '"""Module doc."""\n'
        "import os  # why os\n"
        "class Thing:\n"
        '    """Only a docstring."""\n'
        "def work(x):\n"
        "    '''Explains work.\n\n    Twice.'''\n"
        "    # a comment line\n"
        '    return x + "#not a comment"\n'
    )
    stripped = strip_docstrings_and_comments(source)
    ast.parse(stripped)
    assert "doc" not in stripped.lower() and "Explains" not in stripped
    assert "why os" not in stripped and "a comment line" not in stripped
    assert '"#not a comment"' in stripped
    assert extract_docstrings(source) == [
        "Module doc.",
        "Only a docstring.",
        "Explains work.\n\nTwice.",
    ]


def test_real_stdlib_files_strip_to_valid_python_without_comments() -> None:
    files = stdlib_python_files(max_files=8)
    assert len(files) == 8 and files == stdlib_python_files(max_files=8)  # deterministic order
    everything = stdlib_python_files()
    assert not any({"site-packages", "test", "tests"} & set(p.parts) for p in everything)
    for path in files:
        with tokenize.open(path) as handle:
            stripped = strip_docstrings_and_comments(handle.read())
        ast.parse(stripped)
        tokens = tokenize.generate_tokens(io.StringIO(stripped).readline)
        assert not any(token.type == tokenize.COMMENT for token in tokens), path


def test_training_bookkeeping() -> None:
    assert checkpoint_steps(150, 3) == [50, 100, 150]
    assert checkpoint_steps(2, 5) == [1, 2]


def test_presets() -> None:
    assert Params.preset("quick") == Params()
    full = Params.preset("full", device="cuda", seed=3)
    assert full.device == "cuda" and full.seed == 3
    assert full.language_model.lora_ranks == [16, 64, 256]
    with pytest.raises(ValueError, match="preset"):
        Params.preset("huge")  # type: ignore[arg-type]


def test_tier1_lora_learns_less_and_forgets_less_when_the_needed_rank_exceeds_r() -> None:
    # The quick preset's tier 1, restricted to the methods and k* the claims need.
    params = TeacherParams()
    runs = run_teacher_study(
        params, seed=0, device="cpu", perturbation_ranks=[2, 32], methods=[None, 4], control=False
    )
    finals = {}
    for k in (2, 32):
        subset = [r for r in runs if r.extra["perturbation_rank"] == k]
        for method, lr in choose_learning_rates(subset).items():
            finals[k, method] = next(
                r for r in subset if r.method == method and r.lr == lr
            ).checkpoints[-1]
    full, lora = finals[32, FULL_FT], finals[32, "lora_r4"]
    assert lora.forgetting < 0.7 * full.forgetting  # forgets less
    assert lora.target_loss > 3 * full.target_loss  # learns less
    assert min(full.rank90.values()) > 4  # full FT's update is not low-rank
    assert max(lora.rank90.values()) <= 4
    # When the needed rank k* = 2 fits in r = 4, LoRA learns as well as full FT.
    assert finals[2, "lora_r4"].target_loss < 2 * finals[2, FULL_FT].target_loss


def test_the_study_runs_end_to_end_and_writes_the_required_result(tmp_path: Path) -> None:
    params = Params(
        teacher=TeacherParams(
            dim=8,
            perturbation_ranks=[2, 8],
            lora_ranks=[1, 4],
            pretrain_steps=20,
            finetune_steps=6,
            checkpoints=2,
            eval_size=32,
        ),
        language_model=LanguageModelParams(
            d_model=16,
            n_heads=2,
            n_layers=2,
            context=16,
            batch_size=4,
            pretrain_steps=3,
            finetune_steps=4,
            checkpoints=2,
            lora_ranks=[2, 4],
            module_variant_rank=2,
            code_chars=20_000,
            eval_sequences=4,
            corpus_max_files=40,
        ),
    )
    reports: list[tuple[int, int]] = []
    result = run_study(
        "lora",
        params,
        tmp_path,
        progress=lambda done, total, message="": reports.append((done, total)),
    )
    assert reports[-1][0] == reports[-1][1]  # progress reached its announced total
    saved = json.loads((tmp_path / "result.json").read_text())["metrics"]
    for key in ("runs", "random_baseline_rank90", "control_rank90", "chosen_lrs", "seeds"):
        assert key in saved, key
    tier2_run = next(r for r in saved["runs"] if r["tier"] == 2 and r["method"] == "lora_r2")
    checkpoint = tier2_run["checkpoints"][-1]
    assert {"target_bpc", "source_bpc", "forgetting", "rank90"} <= set(checkpoint)
    assert max(checkpoint["rank90"].values()) <= 2
    assert set(saved["chosen_lrs"]["tier2"]) >= {"full", "lora_r2", "lora_r4", "lora_attn_r2"}
    for figure in result.figures:
        assert (tmp_path / figure).stat().st_size > 0
    assert load_corpora(max_files=40).prose  # served from the cache the run filled
