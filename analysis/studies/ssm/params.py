"""Parameters of the SSM learning-dynamics study; the defaults are the ``quick`` preset."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from analysis.studies.base import DeviceName, PresetName, StudyParams


class Params(StudyParams):
    """Everything the study needs; learning rates are given relative to the data's own ``η``.

    ``lr = lr_scale / η`` makes ``lr · σ · w* = lr_scale`` (the issue's ``lr ≪ 1/(σ w*)``) whatever
    the input spectrum, so trajectories compared in units of ``t/τ`` have a fixed discretization
    error.
    """

    # data and teacher (a one-dimensional SSM with kernel teacher_gain · teacher_a^ℓ)
    seq_len: int = Field(default=128, ge=8)
    n_sequences: int = Field(default=256, ge=2)
    ar_coef: float = Field(default=0.8, gt=-1.0, lt=1.0)
    teacher_a: float = Field(default=0.7, gt=-1.0, lt=1.0)
    teacher_gain: float = Field(default=1.5, gt=0.0)
    n_seeds: int = Field(
        default=1, ge=1, description="independent data/init draws: seed, seed+1, …"
    )

    # experiment 1-2: fixed a, closed form, deep-linear-network equivalence, causal pitfall
    student_a: float = Field(default=0.5, gt=-1.0, lt=1.0)
    lr_scale: float = Field(default=0.002, gt=0.0, le=0.1)
    init_fraction: float = Field(default=1e-3, gt=0.0, lt=1.0, description="w0 / w*")
    causal_check_a: float = Field(default=0.95, gt=-1.0, lt=1.0)

    # experiment 3: learning a as well
    learn_a_init: float = Field(default=0.2, gt=-1.0, lt=1.0)
    learn_a_horizon: float = Field(
        default=2.5, gt=1.0, description="run length in fixed-a t90 units"
    )

    # experiment 4: latent sweep (reduced equations), autograd spot checks
    latent_sizes: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    latent_small_init_fraction: float = Field(
        default=1e-3, gt=0.0, lt=1.0, description="N_max ε² / w*"
    )
    latent_linear_scale: float = Field(default=4.0, gt=0.0, description="β² / w*, linear regime")
    latent_crossover_scale: float = Field(
        default=0.01, gt=0.0, description="β² / w*, small one-sided"
    )
    latent_step_fraction: float = Field(
        default=0.01, gt=0.0, le=0.1, description="dt × fastest rate"
    )
    latent_spot_sizes: list[int] = Field(default_factory=lambda: [1, 64])
    init_jitter: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="relative per-unit init noise"
    )

    # experiment 5: deep stacks of complex-diagonal layers, one unit per frequency mode
    depth_layers: list[int] = Field(default_factory=lambda: [1, 2, 3])
    depth_mode_freqs: list[float] = Field(
        default_factory=lambda: [1 / 16, 2 / 16, 3 / 16, 4 / 16],
        description="mode frequencies in cycles per sample (pole angles 2πf)",
    )
    depth_mode_gains: list[float] = Field(default_factory=lambda: [1.0, 0.6, 0.35, 0.2])
    depth_pole_decay: float = Field(default=0.1, gt=0.0, description="κ in |a| = e^{-κ/L}")
    depth_init_w: float = Field(
        default=0.01, gt=0.0, lt=1.0, description="every mode's W₀ = ε^{2D}"
    )
    depth_lr_scale: float = Field(default=0.02, gt=0.0, le=0.1)
    depth_horizon: float = Field(
        default=1.3, ge=1.0, description="run length / slowest predicted t90"
    )
    depth_spot_steps: int = Field(default=150, ge=10)

    # experiment 6: MIMO complex-diagonal SSM, (B, C) learned with Λ fixed; optional pole learning
    mimo_inputs: int = Field(default=4, ge=1)
    mimo_outputs: int = Field(default=4, ge=1)
    mimo_latent: int = Field(default=8, ge=1)
    mimo_seq_len: int = Field(default=64, ge=8)
    mimo_singular_values: list[float] = Field(default_factory=lambda: [4.0, 2.0, 1.0, 0.5])
    mimo_pole_decay: float = Field(default=0.2, gt=0.0, description="|λ| = e^{-κ}")
    mimo_pole_freq: float = Field(default=0.1, gt=0.0, lt=0.5)
    mimo_lr_scale: float = Field(default=0.02, gt=0.0, le=0.2)
    mimo_init_fraction: float = Field(default=1e-3, gt=0.0, lt=1.0, description="u0 / s_max")
    mimo_horizon: float = Field(default=1.6, ge=1.0, description="run / slowest half-time")
    mimo_learn_pole_steps: int = Field(default=300, ge=0)
    mimo_pole_lr: float = Field(default=0.02, gt=0.0)
    mimo_pole_init_scale: float = Field(default=0.9, gt=0.0)
    mimo_pole_init_turn: float = Field(default=0.15, description="radians")

    @model_validator(mode="after")
    def _check_lists(self) -> Params:
        if len(self.depth_mode_freqs) != len(self.depth_mode_gains):
            raise ValueError("depth_mode_freqs and depth_mode_gains must have the same length")
        if any(not 0.0 < f < 0.5 for f in self.depth_mode_freqs):
            raise ValueError("depth_mode_freqs must lie strictly between 0 and 0.5")
        if any(n < 1 for n in [*self.latent_sizes, *self.latent_spot_sizes, *self.depth_layers]):
            raise ValueError("latent sizes and depths must be >= 1")
        if len(self.mimo_singular_values) > min(
            self.mimo_inputs, self.mimo_outputs, self.mimo_latent
        ):
            raise ValueError("mimo_singular_values: at most min(P, Q, N) of them")
        if len(self.latent_sizes) < 3:
            raise ValueError("latent_sizes needs at least 3 sizes to fit a slope")
        return self

    @classmethod
    def preset(
        cls, name: PresetName | Literal["quick", "full"], device: DeviceName = "cpu", seed: int = 0
    ) -> Params:
        """``quick``: ≤ 2 min on 2 CPU cores. ``full``: L = 16k, N up to 1024, 8 seeds (GPU)."""
        if name == "quick":
            return cls(preset="quick", device=device, seed=seed)
        if name == "full":
            return cls(
                preset="full",
                device=device,
                seed=seed,
                seq_len=16384,
                n_sequences=512,
                n_seeds=8,
                latent_sizes=[2**i for i in range(11)],
                latent_spot_sizes=[1, 32, 1024],
                init_jitter=0.1,
                depth_mode_freqs=[f / 32 for f in (2, 4, 6, 8, 10, 12)],
                depth_mode_gains=[1.0, 0.75, 0.55, 0.4, 0.3, 0.2],
                mimo_inputs=16,
                mimo_outputs=16,
                mimo_latent=1024,
                mimo_seq_len=16384,
                mimo_singular_values=[8.0, 4.0, 2.0, 1.0, 0.5, 0.25],
                mimo_learn_pole_steps=2000,
            )
        raise ValueError(f"preset: unknown {name!r}; choose 'quick' or 'full'")
