"""Parameters of the GP study; field defaults are the quick preset (<= 2 minutes on 2 CPU cores)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from analysis.studies.base import DeviceName, PresetName, StudyParams
from analysis.studies.gp.estimators import Arm, EstimatorSettings
from analysis.studies.gp.optimize import FitSettings


class Params(StudyParams):
    """Everything that decides the study's numbers (the seed included)."""

    dims: int = Field(default=1, ge=1, description="input dimension of the synthetic GP draws")
    true_outputscale: float = Field(default=2.0, gt=0)
    true_noise: float = Field(
        default=0.01, gt=1e-4, description="small noise: CG is slow to converge"
    )
    ard: bool = Field(default=False, description="one lengthscale per input dimension")

    # Estimator budgets; E[J] of RR-CG is matched to cg_iterations (J_min + 1/(e^rate - 1)).
    probes: int = Field(default=8, ge=1, description="Rademacher probes for traces and log-dets")
    cg_iterations: int = Field(default=16, ge=1)
    rr_min_iterations: int = Field(default=7, ge=1)
    rr_rate: float = Field(default=0.1054, gt=0)
    rff_features: int = Field(
        default=64, ge=1, description="frequencies D (2D features: cos and sin)"
    )
    rr_rff_grid: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
    rr_rff_rate: float = Field(default=0.35, gt=0, description="~ln(2)/2: p(k) ~ 1/sqrt(D_k)")

    # 1. Estimator bias at the true hyperparameters.
    bias_n: int = Field(default=500, ge=10)
    bias_lengthscale: float = Field(default=0.3, gt=0)
    bias_cg_iterations: tuple[int, ...] = (4, 8, 16, 32)
    bias_rff_features: tuple[int, ...] = (16, 64, 256, 1024)
    bias_repeats: int = Field(default=16, ge=2)
    bias_rr_repeats: int = Field(
        default=64, ge=2, description="RR estimators are noisier: more repeats"
    )

    # 2. Hyperparameter recovery.
    recovery_n: int = Field(default=200, ge=10)
    recovery_lengthscales: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)
    recovery_arms: tuple[Arm, ...] = ("cholesky", "cg", "rr_cg", "rff")
    steps: int = Field(default=300, ge=1, description="Adam steps, the same for every arm")
    learning_rate: float = Field(default=0.05, gt=0)
    tail_fraction: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="report log-hyperparameters averaged over this final share",
    )
    record_every: int = Field(default=10, ge=1)

    # 3. Held-out test metrics.
    test_datasets: tuple[Literal["synthetic", "diabetes"], ...] = ("synthetic", "diabetes")
    test_seeds: tuple[int, ...] = (0, 1, 2)
    test_synthetic_n: int = Field(default=400, ge=10)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    test_arms: tuple[Arm, ...] = ("cholesky", "cg", "rr_cg", "rff")

    # 4. Step time against n.
    timing_sizes: tuple[int, ...] = (250, 500, 1000, 2000, 5000)
    timing_steps: int = Field(default=1, ge=1, description="timed steps per n (median reported)")
    timing_arms: tuple[Arm, ...] = ("cholesky", "cg", "rr_cg")

    @model_validator(mode="after")
    def _check(self) -> Params:
        if self.rr_min_iterations > self.cg_iterations:
            raise ValueError("rr_min_iterations: must not exceed cg_iterations (E[J] >= J_min)")
        if len(self.rr_rff_grid) < 2 or list(self.rr_rff_grid) != sorted(set(self.rr_rff_grid)):
            raise ValueError("rr_rff_grid: needs at least two strictly increasing sizes")
        return self

    @classmethod
    def preset(cls, name: PresetName, device: DeviceName = "cpu", seed: int = 0) -> Params:
        """``quick``: small n on a CPU; ``full``: the paper's budgets and n up to 20k+ on a GPU."""
        if name == "quick":
            return cls(preset="quick", device=device, seed=seed)
        return cls(
            preset="full",
            device=device,
            seed=seed,
            probes=16,
            # The paper's compute match: CG 100 vs RR-CG J_min = 80, rate 0.05 -> E[J] ~ 99.5.
            cg_iterations=100,
            rr_min_iterations=80,
            rr_rate=0.05,
            rff_features=256,
            rr_rff_grid=(64, 128, 256, 512, 1024, 2048, 4096),
            # Three inputs: in one dimension 100 CG iterations solve these systems exactly.
            dims=3,
            bias_n=1000,
            bias_lengthscale=1.0,
            bias_cg_iterations=(10, 25, 50, 100, 200),
            bias_rff_features=(64, 256, 1024, 4096),
            bias_repeats=32,
            bias_rr_repeats=64,
            recovery_n=2000,
            recovery_lengthscales=(0.5, 1.0, 2.0),
            recovery_arms=("cholesky", "cg", "rr_cg", "rff", "rr_rff"),
            steps=300,
            test_synthetic_n=2500,
            timing_sizes=(1000, 2000, 5000, 10000, 20000, 30000),
            timing_steps=3,
        )

    def estimator_settings(self) -> EstimatorSettings:
        return EstimatorSettings(
            probes=self.probes,
            cg_iterations=self.cg_iterations,
            rr_min_iterations=self.rr_min_iterations,
            rr_rate=self.rr_rate,
            rff_features=self.rff_features,
            rr_rff_grid=self.rr_rff_grid,
            rr_rff_rate=self.rr_rff_rate,
        )

    def fit_settings(self) -> FitSettings:
        return FitSettings(
            steps=self.steps,
            learning_rate=self.learning_rate,
            record_every=self.record_every,
            tail_fraction=self.tail_fraction,
        )
