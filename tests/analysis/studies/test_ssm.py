"""Tests of the SSM learning-dynamics study: the theory's identities, the quick preset's claims."""

from __future__ import annotations

import cmath
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.studies.base import run_study
from analysis.studies.ssm import Params
from analysis.studies.ssm.depth import (
    ModeBank,
    mode_bank,
    one_depth,
    parseval_grad,
    stack_transfer,
)
from analysis.studies.ssm.fixed_a import dln_equivalence, fixed_a_one, make_problem
from analysis.studies.ssm.latent import latent_sweep
from analysis.studies.ssm.learn_a import learn_a
from analysis.studies.ssm.mimo import mimo_experiment, transfer_matrix, transfers
from analysis.studies.ssm.spectral import (
    DTYPE,
    Spectra,
    causal_conv,
    circulant_conv,
    circular_conv,
    decay_kernel,
    make_input,
    recurrent_kernel,
    sigma_eta_time,
    transfer_real_readout,
    white_noise,
)
from analysis.studies.ssm.theory import (
    balanced_logistic,
    balanced_rhs,
    deep_scalar_trajectory,
    latent_t_level,
)
from analysis.studies.ssm.training import gd_ssm, make_conv


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small tensors: one intra-op thread is far faster on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small(**overrides: object) -> Params:
    """A small problem for the identities (not the quick preset)."""
    base: dict[str, object] = {"seq_len": 64, "n_sequences": 32}
    base.update(overrides)
    return Params.model_validate(base)


# --- the frequency-domain identities -------------------------------------------------------------


@pytest.mark.parametrize("a", [0.7, -0.4, cmath.rect(0.9, 0.5)])
def test_decay_kernel_is_the_recurrence_impulse_response(a: complex) -> None:
    a_t = torch.tensor(a, dtype=torch.complex128 if isinstance(a, complex) else DTYPE)
    assert torch.allclose(decay_kernel(a_t, 40), recurrent_kernel(a, 40), atol=1e-13)


def test_fft_convolutions_match_time_domain_sums() -> None:
    u = white_noise(5, 24, gen())
    kernel = torch.randn(24, generator=gen(1), dtype=DTYPE)
    assert torch.allclose(circular_conv(u, kernel), circulant_conv(u, kernel), atol=1e-12)
    direct = torch.stack(
        [
            sum((kernel[lag] * u[:, t - lag] for lag in range(t + 1)), torch.zeros(5, dtype=DTYPE))
            for t in range(24)
        ],
        dim=1,
    )
    assert torch.allclose(causal_conv(u, kernel), direct, atol=1e-12)


@pytest.mark.parametrize("kind", ["white", "ar1"])
@pytest.mark.parametrize("a", [0.5, 0.95, cmath.rect(0.8, 1.1)])
def test_sigma_eta_by_fft_equal_time_domain_definitions(kind: str, a: complex) -> None:
    u = make_input(kind, 48, 64, 0.8, gen(2))
    y = circulant_conv(u, 1.3 * decay_kernel(torch.tensor(0.7, dtype=DTYPE), 64))
    a_t = torch.tensor(a, dtype=torch.complex128 if isinstance(a, complex) else DTYPE)
    sigma, eta = Spectra.of(u, y).sigma_eta(transfer_real_readout(a_t, 64))
    sigma_t, eta_t = sigma_eta_time(u, y, circulant_conv(u, decay_kernel(a_t, 64)))
    assert float(sigma) == pytest.approx(sigma_t, rel=1e-10)
    assert float(eta) == pytest.approx(eta_t, rel=1e-10)


def test_fft_statistics_are_wrong_for_causal_convolution_near_the_unit_circle() -> None:
    """The pitfall: |a|^L ≈ 0 is not enough, the causal edge effect is O(1/(L(1-a)))."""
    u = white_noise(64, 128, gen(3))
    a = torch.tensor(0.95, dtype=DTYPE)
    assert abs(float(a) ** 128) < 2e-3
    y = causal_conv(u, decay_kernel(torch.tensor(0.7, dtype=DTYPE), 128))
    sigma_fft, _ = Spectra.of(u, y).sigma_eta(transfer_real_readout(a, 128))
    sigma_causal, _ = sigma_eta_time(u, y, causal_conv(u, decay_kernel(a, 128)))
    assert abs(float(sigma_fft) / sigma_causal - 1.0) > 0.03


def test_parseval_loss_equals_time_domain_mse() -> None:
    u = white_noise(16, 32, gen(4))
    y = torch.randn(16, 32, generator=gen(5), dtype=DTYPE)
    kernel = 0.8 * decay_kernel(torch.tensor(0.6, dtype=DTYPE), 32)
    mse = 0.5 * ((circulant_conv(u, kernel) - y) ** 2).mean()
    assert float(Spectra.of(u, y).loss(torch.fft.fft(kernel))) == pytest.approx(
        float(mse), rel=1e-12
    )


# --- closed forms -------------------------------------------------------------------------------


def test_closed_form_satisfies_the_gradient_flow_ode() -> None:
    eta, sigma, w0 = 1.7, 0.9, 1e-3
    t = np.linspace(0.0, 10.0, 1001)
    h = 1e-5
    w = balanced_logistic(t, eta, sigma, w0)
    derivative = (
        balanced_logistic(t + h, eta, sigma, w0) - balanced_logistic(t - h, eta, sigma, w0)
    ) / (2 * h)
    assert np.max(np.abs(derivative - balanced_rhs(w, eta, sigma))) < 1e-7 * (eta**2 / sigma)
    assert w[0] == pytest.approx(w0) and w[-1] == pytest.approx(eta / sigma, rel=1e-6)
    # a wrong rate is caught by the same check
    wrong = balanced_logistic(t, 1.1 * eta, sigma, w0)
    assert np.max(np.abs(np.gradient(wrong, t) - balanced_rhs(wrong, eta, sigma))) > 0.05


def test_deep_scalar_flow_with_two_factors_is_the_logistic() -> None:
    t = np.linspace(0.0, 4.0, 200)
    rk4 = deep_scalar_trajectory(t, 1.2, 0.8, 0.01, n_factors=2)
    assert np.max(np.abs(rk4 - balanced_logistic(t, 1.2, 0.8, 0.01))) < 1e-8


def test_latent_quadrature_matches_the_known_limits() -> None:
    eta, sigma = 2.0, 1.25
    w_star = eta / sigma
    w0 = 1e-4
    # balanced (Q = 0): the logistic's t90 = ln(9 (w*/w0 - 1)) / (2η)
    p_sum = 4.0 * w0
    assert latent_t_level(eta, sigma, 1.0, p_sum, 0.0) == pytest.approx(
        math.log(9.0 * (w_star / w0 - 1.0)) / (2.0 * eta), rel=1e-9
    )
    # one-sided with N β² ≫ w*: exponential with time constant 1/(N β² σ)
    n, beta2 = 64, 50.0 * w_star
    t = latent_t_level(eta, sigma, 1.0, n * beta2, n * beta2)
    assert t == pytest.approx(math.log(10.0) / (n * beta2 * sigma), rel=0.01)


# --- the quick preset's claims, on the smallest sub-experiment that shows them -------------------


def test_quick_preset_fixed_a_matches_closed_form() -> None:
    params = Params.preset("quick", seed=0)
    stats, _ = fixed_a_one(params, "white", gen(params.seed))
    assert stats["max_rel_error"] < 0.02
    assert stats["fitted_rate"] == pytest.approx(stats["predicted_rate"], rel=0.01)
    # the residual error is time discretization only: the reduced scalar map is GD exactly
    assert stats["max_rel_error_vs_reduced_gd"] < 1e-9


def test_quick_preset_latent_sweep_slopes() -> None:
    params = Params.preset("quick", seed=0)
    problem = make_problem(params, "white", gen(params.seed), params.student_a)
    sweep = latent_sweep(
        params,
        [problem],
        gen(1),
        only={"linear", "small_balanced", "tied_linear"},
        with_spot_checks=False,
    )
    regimes = sweep["regimes"]
    assert -1.2 <= regimes["linear"]["loglog_slope"] <= -0.8
    assert regimes["tied_linear"]["loglog_slope"] == pytest.approx(-2.0, abs=0.1)
    small_balanced = regimes["small_balanced"]
    assert small_balanced["log_coefficient"] == pytest.approx(
        small_balanced["log_coefficient_predicted"], rel=0.05
    )
    for entry in regimes.values():
        assert entry["max_rel_diff_sim_vs_theory"] < 0.01
    assert sweep["n2_claim"]["regimes_with_slope_near_-2"] == ["tied_linear"]


def test_conserved_quantity_under_small_step_gd() -> None:
    params = small()
    problem = make_problem(params, "white", gen(6), params.student_a)
    lr = 0.002 / problem.eta
    trace = gd_ssm(
        make_conv(problem.u, "circular"),
        problem.y,
        problem.a,
        torch.tensor([0.5], dtype=DTYPE),
        torch.tensor([0.05], dtype=DTYPE),
        lr,
        steps=1500,
    )
    conserved = trace.b[:, 0] ** 2 - trace.c[:, 0] ** 2
    drift = conserved - conserved[0]
    assert np.max(np.abs(drift)) < 1e-3
    assert trace.w[-1] > 0.9 * problem.w_star  # it did learn: the invariant is not vacuous
    # and the drift is exactly GD's O(lr²) one: each step multiplies b² - c² by 1 - lr² e²
    err = problem.eta - problem.sigma * trace.w[:-1]
    predicted = conserved[0] * (np.cumprod(1.0 - (lr * err) ** 2) - 1.0)
    assert drift[-1] == pytest.approx(predicted[-1], rel=1e-6)


def test_ssm_and_matched_two_layer_network_trace_the_same_path() -> None:
    params = small(lr_scale=0.01)
    stats, ssm, _ = dln_equivalence(params, gen(7))
    assert stats["max_abs_diff"] < 1e-10
    assert ssm.w[-1] == pytest.approx(stats["w_star"], rel=1e-3)


def test_learning_a_reaches_the_teacher_and_reduced_flow_tracks_it() -> None:
    params = small(lr_scale=0.01, learn_a_horizon=3.0)
    summary = learn_a(params, gen(8)).summary
    assert summary["abs_a_error_final"] < 1e-2
    assert summary["reduced_flow_max_abs_diff_a"] < 1e-9
    assert summary["reduced_flow_max_abs_diff_w"] < 1e-9
    assert 0.0 < summary["departure_t_over_tau"] < summary["t90_fixed_a_theory"]


def test_hand_derived_stack_gradient_matches_autograd() -> None:
    params = small(depth_mode_freqs=[1 / 8, 1 / 4], depth_mode_gains=[1.0, 0.5])
    bank: ModeBank = mode_bank(params, "cpu")
    u = white_noise(16, 64, gen(9))
    y = torch.randn(16, 64, generator=gen(10), dtype=DTYPE)
    spectra = Spectra.of(u, y)
    b = torch.rand(3, 2, generator=gen(11), dtype=DTYPE).requires_grad_(True)
    c = torch.rand(3, 2, generator=gen(12), dtype=DTYPE).requires_grad_(True)
    auto_b, auto_c = torch.autograd.grad(spectra.loss(stack_transfer(b, c, bank.transfers)), [b, c])
    hand_b, hand_c = parseval_grad(spectra, b.detach(), c.detach(), bank.transfers)
    assert torch.allclose(auto_b, hand_b, atol=1e-12) and torch.allclose(auto_c, hand_c, atol=1e-12)


def test_deep_stack_learns_modes_in_order_like_deep_linear_networks() -> None:
    params = small(depth_mode_freqs=[1 / 8, 1 / 4], depth_mode_gains=[1.0, 0.3], depth_init_w=0.03)
    bank = mode_bank(params, "cpu")
    u = white_noise(params.n_sequences, params.seq_len, gen(13))
    summary, _ = one_depth(params, bank, u, depth=2)
    assert summary["learned_in_order_of_gain"] and summary["learned_in_predicted_order"]
    assert summary["t_half_max_rel_diff"] < 0.05
    assert summary["spot_check_max_abs_diff"] < 1e-10
    assert min(summary["final_bin_gain_over_teacher"]) > 0.9


# --- the study as a whole -----------------------------------------------------------------------


def test_presets_and_validation() -> None:
    quick, full = Params.preset("quick"), Params.preset("full", device="cpu", seed=3)
    assert quick == Params()
    assert full.seed == 3 and max(full.latent_sizes) == 1024 and full.seq_len == 16384
    with pytest.raises(ValueError):
        Params(depth_mode_freqs=[0.1], depth_mode_gains=[1.0, 0.5])
    with pytest.raises(ValueError):
        Params.preset("huge")  # type: ignore[arg-type]


def test_tiny_end_to_end_run_writes_result_and_figures(tmp_path: Path) -> None:
    params = Params(
        seq_len=32,
        n_sequences=16,
        lr_scale=0.02,
        init_fraction=0.01,
        latent_sizes=[1, 2, 4],
        latent_spot_sizes=[2],
        latent_step_fraction=0.05,
        depth_layers=[1, 2],
        depth_mode_freqs=[1 / 8, 1 / 4],
        depth_mode_gains=[1.0, 0.5],
        depth_init_w=0.1,
        depth_lr_scale=0.05,
        depth_spot_steps=10,
        mimo_inputs=2,
        mimo_outputs=2,
        mimo_latent=3,
        mimo_seq_len=16,
        mimo_singular_values=[2.0, 1.0],
        mimo_lr_scale=0.1,
        mimo_init_fraction=0.01,
        mimo_learn_pole_steps=10,
    )
    reports: list[tuple[int, int]] = []
    result = run_study("ssm", params, tmp_path, progress=lambda d, t, m="": reports.append((d, t)))
    saved = json.loads((tmp_path / "result.json").read_text())
    metrics = saved["metrics"]
    for key in ("max_rel_error", "fitted_rate", "predicted_rate"):
        assert isinstance(metrics["fixed_a"][key], float)
    assert "max_abs_diff" in metrics["dln_equivalence"]
    for entry in metrics["latent_sweep"]["regimes"].values():
        assert entry["N"] == [1, 2, 4] and len(entry["t90"]) == 3 and "loglog_slope" in entry
    assert "a_final" in metrics["learn_a"] and len(metrics["depth"]["per_depth"]) == 2
    assert metrics["seeds"]["data_seeds"] == [0]
    assert sorted(result.figures) == sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(result.figures) == 5
    assert metrics["mimo"]["in_order_of_strength"] in (True, False)
    assert reports[-1][0] == reports[-1][1]


def test_mimo_transfer_matrix_is_the_recurrence() -> None:
    """``H_k = C diag(g̃_k(λ_n)) B`` is the DFT of the stepped recurrence."""
    g0 = gen(7)
    lam = torch.tensor([0.8 * cmath.exp(0.7j), 0.5 * cmath.exp(2.0j), -0.3 + 0j])
    b = torch.randn(3, 2, generator=g0, dtype=DTYPE)
    c = torch.randn(4, 3, generator=g0, dtype=DTYPE)
    seq_len = 32
    h = transfer_matrix(c, transfers(lam, seq_len), b)
    state = torch.zeros(3, 2, dtype=torch.complex128)
    kernel = []
    for step in range(seq_len):
        state = lam[:, None] * state + (b.to(torch.complex128) if step == 0 else 0.0)
        kernel.append(torch.real(c.to(torch.complex128) @ state))
    expected = torch.fft.fft(torch.stack(kernel), dim=0)
    assert torch.allclose(h, expected, atol=1e-10)


def test_quick_preset_mimo_modes_follow_the_deep_linear_network() -> None:
    summary, curves = mimo_experiment(Params.preset("quick"), gen(6000))
    assert summary["max_half_time_rel_error"] < 0.03
    assert summary["max_curve_abs_error"] < 0.05
    assert summary["in_order_of_strength"]
    assert np.all(np.diff(summary["half_time_aligned"]) > 0)
    assert summary["learn_pole"]["pole_rel_error"] < 1e-3
    assert curves.strengths.shape[1] == 4
