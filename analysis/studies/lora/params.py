"""Parameters of the LoRA study; field defaults are the ``quick`` preset (CPU)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from analysis.studies.base import DeviceName, PresetName, StudyParams


class TeacherParams(BaseModel):
    """Tier 1: a two-layer tanh MLP student finetuned towards a perturbed teacher."""

    model_config = ConfigDict(extra="forbid")

    dim: int = Field(
        default=64, ge=4, description="input, hidden and output width (square weights)"
    )
    perturbation_ranks: list[int] = Field(
        default_factory=lambda: [2, 32, 64],
        description="ranks k* of the teacher perturbation; k* >= dim means full rank",
    )
    perturbation_size: float = Field(
        default=0.6, gt=0, description="||dW*||_F / ||W||_F of every perturbed teacher layer"
    )
    lora_ranks: list[int] = Field(default_factory=lambda: [1, 4, 16, 64])
    pretrain_steps: int = Field(default=1500, ge=1)
    pretrain_lr: float = Field(default=1e-2, gt=0)
    finetune_steps: int = Field(default=300, ge=1)
    checkpoints: int = Field(
        default=4, ge=1, description="evenly spaced evaluations during finetuning"
    )
    batch_size: int = Field(default=128, ge=1)
    eval_size: int = Field(default=4096, ge=16)
    full_ft_lrs: list[float] = Field(default_factory=lambda: [1e-3, 3e-3])
    lora_lrs: list[float] = Field(default_factory=lambda: [3e-3, 1e-2])


class LanguageModelParams(BaseModel):
    """Tier 2: a character-level GPT pretrained on stdlib docstrings, finetuned on stdlib code."""

    model_config = ConfigDict(extra="forbid")

    d_model: int = Field(
        default=128, ge=8, description="128, not the issue's ~256: see docs/studies/lora.md"
    )
    n_layers: int = Field(default=2, ge=1)
    n_heads: int = Field(default=4, ge=1)
    context: int = Field(default=64, ge=4)
    batch_size: int = Field(default=32, ge=1)
    pretrain_steps: int = Field(default=1200, ge=1)
    pretrain_lr: float = Field(
        default=1e-2, gt=0, description="Adam LR; must shrink with width (d=256 wants ~2e-3)"
    )
    finetune_steps: int = Field(default=150, ge=1)
    checkpoints: int = Field(
        default=3, ge=1, description="evenly spaced evaluations during finetuning"
    )
    lora_ranks: list[int] = Field(default_factory=lambda: [4, 16, 64])
    full_ft_lrs: list[float] = Field(default_factory=lambda: [1e-3, 3e-3])
    lora_lrs: list[float] = Field(default_factory=lambda: [3e-3, 1e-2])
    module_variant_rank: int | None = Field(
        default=16, description="rank of the attention-only and MLP-only variants; None skips them"
    )
    code_chars: int = Field(
        default=1_000_000, ge=1000, description="slice of the code corpus to train on"
    )
    eval_sequences: int = Field(
        default=128, ge=1, description="held-out windows per split and domain"
    )
    corpus_max_files: int | None = Field(
        default=None, description="parse only the first N stdlib files (tests); None parses all"
    )
    dtype: Literal["float32", "float64"] = Field(
        default="float32",
        description="float32: float64 is ~10x slower on CPU for the same conclusions",
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> LanguageModelParams:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads: {self.n_heads} does not divide d_model {self.d_model}")
        return self


class Params(StudyParams):
    """All parameters of the study."""

    teacher: TeacherParams = Field(default_factory=lambda: TeacherParams())
    language_model: LanguageModelParams = Field(default_factory=lambda: LanguageModelParams())
    run_teacher: bool = True
    run_language_model: bool = True

    @classmethod
    def preset(cls, name: PresetName, device: DeviceName = "cpu", seed: int = 0) -> Params:
        """The ``quick`` (CPU, a few minutes) or ``full`` (one GPU) parameters."""
        if name == "quick":
            return cls(preset=name, device=device, seed=seed)
        if name == "full":
            return cls(
                preset=name,
                device=device,
                seed=seed,
                teacher=TeacherParams(
                    dim=128,
                    perturbation_ranks=[2, 8, 32, 128],
                    lora_ranks=[1, 4, 16, 64, 128],
                    pretrain_steps=4000,
                    finetune_steps=1500,
                    checkpoints=6,
                    full_ft_lrs=[3e-4, 1e-3, 3e-3],
                    lora_lrs=[1e-3, 3e-3, 1e-2],
                ),
                language_model=LanguageModelParams(
                    d_model=512,
                    n_layers=4,
                    n_heads=8,
                    context=128,
                    batch_size=64,
                    pretrain_steps=3000,
                    pretrain_lr=8e-4,
                    finetune_steps=2000,
                    checkpoints=5,
                    lora_ranks=[16, 64, 256],
                    full_ft_lrs=[2e-4, 6e-4, 2e-3],
                    lora_lrs=[6e-4, 2e-3, 6e-3],
                    module_variant_rank=64,
                    code_chars=6_000_000,
                    eval_sequences=512,
                ),
            )
        raise ValueError(f"preset: unknown preset {name!r}; choose 'quick' or 'full'")
