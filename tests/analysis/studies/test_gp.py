"""Tests of the GP study: solvers against dense linear algebra, the Russian-roulette estimator's
unbiasedness and weights, gradient wiring, and the quick preset's headline claim on a fixed seed."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from analysis.studies.base import run_study
from analysis.studies.gp import Params
from analysis.studies.gp import estimators as estimators_module
from analysis.studies.gp.bias import bias_table
from analysis.studies.gp.data import gp_draw
from analysis.studies.gp.estimators import (
    EstimatorSettings,
    rff_features,
    rff_terms,
    solve,
    surrogate,
)
from analysis.studies.gp.kernels import (
    Hyperparameters,
    covariance_matrix,
    exact_nll,
    exact_terms,
    kernel_matrix,
    noise,
    pack,
)
from analysis.studies.gp.recovery import recovery
from analysis.studies.gp.solvers import (
    Truncation,
    conjugate_gradients,
    quadrature_logdet,
    russian_roulette_sum,
)
from analysis.studies.gp.study import derived_seeds


def _problem(
    n: int, seed: int = 0, noise_variance: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """A GP-like SPD kernel matrix and a right-hand side."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    theta = pack(Hyperparameters((0.3,), 1.0, noise_variance), torch.float64, "cpu")
    rhs = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    return kernel_matrix(x, theta).detach(), rhs


def _settings(**changes: Any) -> EstimatorSettings:
    base = EstimatorSettings(
        probes=4,
        cg_iterations=10,
        rr_min_iterations=5,
        rr_rate=0.2,
        rff_features=32,
        rr_rff_grid=(8, 16, 32),
        rr_rff_rate=0.35,
    )
    return replace(base, **changes)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These matrices are small: with two threads on a busy shared CPU the threads spin against
    each other (measured 5-25x slower), so this file runs single-threaded and restores after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_cg_matches_dense_solve_at_full_iterations() -> None:
    kernel, rhs = _problem(60)
    result = conjugate_gradients(lambda v: kernel @ v, rhs, iterations=60)
    torch.testing.assert_close(
        result.solution, torch.linalg.solve(kernel, rhs), rtol=1e-7, atol=1e-9
    )


def test_truncated_cg_really_stops_at_the_stated_iterations() -> None:
    kernel, rhs = _problem(60, noise_variance=1e-3)
    result = conjugate_gradients(lambda v: kernel @ v, rhs, iterations=5)
    assert result.iterations == 5
    assert torch.all(result.steps == 5)
    error = (result.solution - torch.linalg.solve(kernel, rhs)).norm()
    assert error > 1e-3 * rhs.norm()  # a loose tolerance or a silent Cholesky would hide this


def test_lanczos_logdet_matches_logdet_at_full_iterations() -> None:
    kernel, _ = _problem(40)
    # With the unit vectors as probes, sum_i e_i^T log(K) e_i is exactly log|K|.
    probes = torch.eye(40, dtype=torch.float64)
    result = conjugate_gradients(lambda v: kernel @ v, probes, iterations=40)
    per_probe = quadrature_logdet(result, result.iterations, torch.ones(40, dtype=torch.float64))
    assert float(per_probe.sum()) == pytest.approx(float(torch.logdet(kernel)), rel=1e-8)


def test_truncated_lanczos_overestimates_logdet() -> None:
    kernel, _ = _problem(40, noise_variance=1e-3)
    probes = torch.eye(40, dtype=torch.float64)
    result = conjugate_gradients(lambda v: kernel @ v, probes, iterations=4)
    per_probe = quadrature_logdet(result, 4, torch.ones(40, dtype=torch.float64))
    # Gauss quadrature of log (all even derivatives negative) errs upward.
    assert float(per_probe.sum()) > float(torch.logdet(kernel)) + 1.0


def test_russian_roulette_weights_are_inverse_survival_not_inverse_pmf() -> None:
    truncation = Truncation(minimum=5, maximum=50, rate=0.2)
    pmf = truncation.pmf()
    survival = torch.tensor(
        [1.0 if j <= 5 else float(pmf[j - 5 :].sum()) for j in range(1, 51)], dtype=torch.float64
    )
    weights = truncation.weights(55)
    torch.testing.assert_close(weights[:50], 1.0 / survival)
    assert torch.all(weights[50:] == 0)
    assert float(weights[10]) != pytest.approx(1.0 / float(pmf[11 - 5]))
    draws = truncation.sample(20_000, torch.Generator().manual_seed(0))
    empirical = torch.stack([(draws >= j).double().mean() for j in range(1, 21)])
    torch.testing.assert_close(empirical, survival[:20], atol=0.02, rtol=0.0)
    columns = truncation.increment_weights(torch.tensor([5, 8]), torch.float64, "cpu")
    assert columns.shape == (8, 2)
    torch.testing.assert_close(columns[:, 1], weights[:8])
    assert torch.all(columns[5:, 0] == 0)


def test_expected_truncation_matches_the_issues_compute_match() -> None:
    assert Truncation(80, 10_000, 0.05).expected_value() == pytest.approx(99.5, abs=0.05)


def _roulette_draws(
    terms: torch.Tensor, truncation: Truncation, weights: torch.Tensor
) -> torch.Tensor:
    draws = truncation.sample(4000, torch.Generator().manual_seed(1))
    partial = torch.cumsum(terms * weights[: len(terms)], 0)
    return partial[draws - 1]


def test_russian_roulette_is_unbiased_for_a_convergent_series() -> None:
    terms = 0.8 ** torch.arange(1, 201, dtype=torch.float64)
    truth = float(terms.sum())
    truncation = Truncation(minimum=3, maximum=200, rate=0.15)
    generator = torch.Generator().manual_seed(1)
    estimates = torch.stack(
        [
            russian_roulette_sum(terms, truncation, int(draw))
            for draw in truncation.sample(4000, generator)
        ]
    )
    standard_error = float(estimates.std()) / math.sqrt(len(estimates))
    assert abs(float(estimates.mean()) - truth) < 3 * standard_error
    # The same draws fall far short of the sum when they stop without reweighting, and the
    # 1/P(J = j) weights overshoot: the test above can tell those apart from 1/P(J >= j).
    plain = _roulette_draws(terms, truncation, torch.ones(200, dtype=torch.float64))
    wrong = torch.cat([torch.ones(2, dtype=torch.float64), 1.0 / truncation.pmf()])
    overweighted = _roulette_draws(terms, truncation, wrong)
    assert abs(float(plain.mean()) - truth) > 10 * standard_error
    assert abs(float(overweighted.mean()) - truth) > 10 * standard_error


def test_rr_cg_solve_is_unbiased_while_truncated_cg_is_not() -> None:
    kernel, rhs = _problem(40, noise_variance=1e-3)
    target = rhs[:, 0]
    exact = float(target @ torch.linalg.solve(kernel, target))
    truncation = Truncation(minimum=3, maximum=40, rate=0.15)
    draws = truncation.sample(3000, torch.Generator().manual_seed(2))
    weights = truncation.increment_weights(draws, torch.float64, "cpu")
    batch = target[:, None].expand(-1, len(draws)).contiguous()
    result = conjugate_gradients(lambda v: kernel @ v, batch, int(draws.max()), weights)
    quadratic = target @ result.solution
    standard_error = float(quadratic.std()) / math.sqrt(len(draws))
    assert abs(float(quadratic.mean()) - exact) < 3 * standard_error
    expected_j = round(truncation.expected_value())
    truncated = conjugate_gradients(lambda v: kernel @ v, target[:, None], expected_j)
    assert exact - float(target @ truncated.solution[:, 0]) > 10 * standard_error


def test_quadratic_gradient_needs_two_independent_rr_solves() -> None:
    kernel, rhs = _problem(40, noise_variance=0.01)
    target = rhs[:, 0]
    derivative = kernel - 0.01 * torch.eye(40, dtype=torch.float64)  # dK/dlog s^2: PSD
    exact_solution = torch.linalg.solve(kernel, target)
    exact = float(exact_solution @ derivative @ exact_solution)
    truncation = Truncation(minimum=3, maximum=40, rate=0.15)
    draws = truncation.sample(4000, torch.Generator().manual_seed(6))
    weights = truncation.increment_weights(draws, torch.float64, "cpu")
    batch = target[:, None].expand(-1, len(draws)).contiguous()
    solutions = conjugate_gradients(lambda v: kernel @ v, batch, int(draws.max()), weights).solution
    first, second = solutions[:, ::2], solutions[:, 1::2]
    independent = (first * (derivative @ second)).sum(0)
    reused = (first * (derivative @ first)).sum(0)
    standard_error = float(independent.std()) / math.sqrt(len(independent))
    assert abs(float(independent.mean()) - exact) < 3 * standard_error
    # u^T dK u with one u adds E[(u - K^-1 y)^T dK (u - K^-1 y)] > 0: the bias the issue warns of.
    assert float(reused.mean()) - exact > 5 * float(reused.std()) / math.sqrt(len(reused))


def test_rr_cg_draws_separate_solves_for_the_two_quadratic_factors() -> None:
    generator = torch.Generator().manual_seed(7)
    x, y = gp_draw(40, 1, Hyperparameters((0.3,), 2.0, 0.01), generator)
    theta = pack(Hyperparameters((0.3,), 2.0, 0.01), torch.float64, "cpu")
    covariance, noise_variance = covariance_matrix(x, theta), noise(theta)
    settings = _settings(cg_iterations=5, rr_min_iterations=3)
    plain = solve("cg", covariance, noise_variance, y, settings, generator)
    roulette = solve("rr_cg", covariance, noise_variance, y, settings, generator)
    assert plain.draws is None and torch.equal(plain.left, plain.right)
    assert roulette.draws is not None and len(roulette.draws) == settings.probes + 2
    assert not torch.equal(roulette.left, roulette.right)


def _exact_gradient(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    theta = theta.clone().requires_grad_(True)
    exact_nll(x, y, theta).backward()  # type: ignore[no-untyped-call]
    assert theta.grad is not None
    return theta.grad


@pytest.mark.parametrize("arm", ["cg", "rr_cg"])
def test_cg_gradient_is_exact_with_full_solves_and_a_complete_probe_basis(
    arm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 30
    generator = torch.Generator().manual_seed(3)
    truth = Hyperparameters((0.3,), 1.0, 0.05)
    x, y = gp_draw(n, 2, truth, generator)
    theta = pack(Hyperparameters((0.4,), 0.7, 0.1), torch.float64, "cpu")

    def unit_probes(size: int, count: int, _generator: object, like: torch.Tensor) -> torch.Tensor:
        # sqrt(n) e_i: (1/n) sum_i z_i z_i^T = I exactly, as E[z z^T] = I for Rademacher probes.
        return math.sqrt(size) * torch.eye(size, count, dtype=like.dtype)

    # These probes make Hutchinson's trace exact; J_min = n makes RR's truncation certain.
    monkeypatch.setattr(estimators_module, "rademacher", unit_probes)
    settings = _settings(probes=n, cg_iterations=n, rr_min_iterations=n)
    estimate = theta.clone().requires_grad_(True)
    loss, cost = surrogate(arm, x, y, estimate, settings, generator)  # type: ignore[arg-type]
    loss.backward()  # type: ignore[no-untyped-call]
    assert 0 < cost <= n  # CG may stop early, but only once the solve is exact
    assert estimate.grad is not None
    torch.testing.assert_close(estimate.grad, _exact_gradient(x, y, theta), rtol=1e-6, atol=1e-8)


def test_rff_woodbury_path_matches_the_dense_rff_kernel() -> None:
    generator = torch.Generator().manual_seed(4)
    x, y = gp_draw(50, 2, Hyperparameters((0.3,), 1.0, 0.05), generator)
    theta = pack(Hyperparameters((0.3,), 1.3, 0.05), torch.float64, "cpu")
    base = torch.randn(10, 2, generator=generator, dtype=torch.float64)  # 2D = 20 < n = 50
    features = rff_features(x, theta, base)
    dense = features @ features.T + 0.05 * torch.eye(50, dtype=torch.float64)
    expected = exact_terms(dense, y)
    actual = rff_terms(x, y, theta, base)
    torch.testing.assert_close(torch.stack(actual), torch.stack(expected), rtol=1e-4, atol=1e-6)


def test_bias_directions_cg_and_rff_err_opposite_ways() -> None:
    params = Params.preset("quick").model_copy(
        update={
            "bias_n": 200,
            "bias_cg_iterations": (5, 20),
            "bias_rff_features": (16, 256),
            "bias_repeats": 4,
            "bias_rr_repeats": 4,
            "rr_rff_grid": (16, 32),
        }
    )
    table = bias_table(params, torch.Generator().manual_seed(5), lambda _message: None)
    rows = {(row["estimator"], row["budget"]): row for row in table["rows"]}
    cg_short, cg_long = rows[("cg", 5.0)], rows[("cg", 20.0)]
    rff_small, rff_large = rows[("rff", 16.0)], rows[("rff", 256.0)]
    assert cg_short["quadratic_bias"] < cg_long["quadratic_bias"] <= 1e-9
    assert cg_short["logdet_paired_bias"] > cg_long["logdet_paired_bias"] > -1e-6
    assert rff_small["quadratic_bias"] > rff_large["quadratic_bias"] > 0
    assert rff_small["logdet_bias"] < rff_large["logdet_bias"] < 0


def test_quick_preset_cg_underfits_and_rr_cg_lands_closer_to_cholesky() -> None:
    # The quick preset's recovery run for true l = 0.2 (its second lengthscale, so its second
    # recovery seed), without the RFF arm.
    quick = Params.preset("quick")
    index = quick.recovery_lengthscales.index(0.2)
    params = quick.model_copy(
        update={"recovery_lengthscales": (0.2,), "recovery_arms": ("cholesky", "cg", "rr_cg")}
    )
    seed = derived_seeds(quick)["recovery"][index]
    result = recovery(params, [seed], lambda _message: None)
    arms = result["arms"]
    cholesky = arms["cholesky"]["lengthscale"][0]
    assert arms["cg"]["lengthscale"][0] > cholesky
    assert abs(arms["rr_cg"]["lengthscale"][0] - cholesky) < abs(
        arms["cg"]["lengthscale"][0] - cholesky
    )
    assert abs(arms["cholesky"]["log_lengthscale_sq_error"][0]) < 0.05  # Adam reached the optimum


def test_run_study_writes_every_required_metric_and_figure(tmp_path: Path) -> None:
    params = Params(
        bias_n=60,
        bias_cg_iterations=(3, 6),
        bias_rff_features=(8, 16),
        bias_repeats=2,
        bias_rr_repeats=2,
        rr_rff_grid=(8, 16),
        recovery_n=60,
        recovery_lengthscales=(0.3,),
        steps=4,
        test_datasets=("synthetic",),
        test_seeds=(0,),
        test_synthetic_n=60,
        timing_sizes=(60, 120),
        timing_steps=1,
    )
    reports: list[tuple[int, int]] = []
    result = run_study(
        "gp", params, tmp_path, lambda done, total, _m="": reports.append((done, total))
    )
    stored = json.loads((tmp_path / "result.json").read_text())
    metrics = stored["metrics"]
    for key in ("bias_table", "recovery", "test_metrics", "timing", "expected_iterations", "seeds"):
        assert key in metrics
    for arm in ("cholesky", "cg", "rr_cg", "rff"):
        record = metrics["recovery"]["arms"][arm]
        assert {"lengthscale", "noise", "outputscale", "exact_nll"} <= set(record)
        per_seed = metrics["test_metrics"]["datasets"]["synthetic"][arm]["per_seed"]
        assert {"rmse", "nll"} <= set(per_seed[0])
    assert metrics["timing"]["per_n"]["120"]["rr_cg"]["seconds_per_step"] > 0
    # Geometric tail past J_min, cut off at J = n (here n = 60 trims it slightly).
    untruncated = params.rr_min_iterations + 1 / (math.exp(params.rr_rate) - 1)
    expected = metrics["expected_iterations"]["rr_cg"]["expected"]
    assert params.rr_min_iterations < expected <= untruncated
    for name in result.figures:
        assert (tmp_path / name).stat().st_size > 1000
    assert reports[-1][0] == reports[-1][1]


def test_presets_are_valid_and_distinct() -> None:
    quick, full = Params.preset("quick"), Params.preset("full", device="cuda", seed=3)
    assert quick == Params()
    assert full.device == "cuda" and full.seed == 3 and max(full.timing_sizes) >= 20_000
    assert full.estimator_settings().expected_cost("rr_cg", 20_000) == pytest.approx(99.5, abs=0.05)
    with pytest.raises(ValueError):
        Params(rr_min_iterations=50, cg_iterations=20)
