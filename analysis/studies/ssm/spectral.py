"""Signals, convolutions and frequency-domain sufficient statistics of linear SSMs.

Conventions (the issue's): length-``L`` DFT with ``ω_k = 2πk/L``; a one-dimensional SSM
``x_t = a x_{t-1} + b u_t, y_t = c x_t`` is the convolution with ``k_ℓ = c a^ℓ b``; the MSE loss
is ``(1/(2 M L)) Σ_m Σ_t (y - ŷ)²``, which Parseval turns into ``(1/(2 M L²)) Σ_m Σ_k |Y - Ŷ|²``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

DTYPE = torch.float64


def frequencies(seq_len: int, device: torch.device | str = "cpu") -> Tensor:
    """``ω_k = 2πk/L`` for ``k = 0 … L-1``."""
    return 2.0 * math.pi * torch.arange(seq_len, dtype=DTYPE, device=device) / seq_len


def transfer_g(a: Tensor, seq_len: int) -> Tensor:
    """``g_k(a) = (1 - a^L) / (1 - a e^{-iω_k})``: the DFT of the length-``L`` kernel ``a^ℓ``.

    ``a`` may be real or complex and may require grad (learning ``a`` differentiates through it).
    """
    omega = frequencies(seq_len, a.device)
    phase = torch.exp(-1j * omega)
    a_c = a.to(torch.complex128) if not a.is_complex() else a
    return (1.0 - a_c**seq_len) / (1.0 - a_c * phase)


def transfer_real_readout(a: Tensor, seq_len: int) -> Tensor:
    """DFT of ``Re(a^ℓ)``: a complex-diagonal unit with real ``b, c`` and output ``Re(c x)``.

    ``Re(a^ℓ) = (a^ℓ + ā^ℓ)/2``, so the transfer is ``(g_k(a) + g_k(ā))/2``; equal to ``g_k(a)``
    for real ``a``.
    """
    a_c = a.to(torch.complex128) if not a.is_complex() else a
    return 0.5 * (transfer_g(a_c, seq_len) + transfer_g(a_c.conj(), seq_len))


def decay_kernel(a: Tensor, seq_len: int) -> Tensor:
    """The real kernel ``Re(a^ℓ)``, ``ℓ = 0 … L-1`` (``a^ℓ`` for real ``a``)."""
    lags = torch.arange(seq_len, dtype=DTYPE, device=a.device)
    if a.is_complex():
        return torch.real(a ** lags.to(torch.complex128))
    return a**lags


def recurrent_kernel(a: complex, seq_len: int) -> Tensor:
    """Impulse response of ``x_t = a x_{t-1} + u_t, y_t = Re(x_t)``, stepped one sample at a time.

    A slow, independent reference for :func:`decay_kernel` (tests only).
    """
    state = 0j
    response = []
    for step in range(seq_len):
        state = a * state + (1.0 if step == 0 else 0.0)
        response.append(state.real)
    return torch.tensor(response, dtype=DTYPE)


def circular_conv(u: Tensor, kernel: Tensor) -> Tensor:
    """Circular convolution along the last axis, by FFT (kernel broadcasts over sequences)."""
    seq_len = u.shape[-1]
    spectrum = torch.fft.rfft(u, dim=-1) * torch.fft.rfft(kernel, dim=-1)
    out: Tensor = torch.fft.irfft(spectrum, n=seq_len, dim=-1)
    return out


def causal_conv(u: Tensor, kernel: Tensor) -> Tensor:
    """Causal convolution ``Σ_{ℓ≤t} k_ℓ u_{t-ℓ}``: what the recurrence from ``x_0 = 0`` computes."""
    seq_len = u.shape[-1]
    padded = 2 * seq_len
    spectrum = torch.fft.rfft(u, n=padded, dim=-1) * torch.fft.rfft(kernel, n=padded, dim=-1)
    out: Tensor = torch.fft.irfft(spectrum, n=padded, dim=-1)
    return out[..., :seq_len]


def circulant_conv(u: Tensor, kernel: Tensor) -> Tensor:
    """Circular convolution as an explicit time-domain matrix product (reference, no FFT)."""
    seq_len = u.shape[-1]
    idx = torch.arange(seq_len, device=u.device)
    lag = (idx[:, None] - idx[None, :]) % seq_len  # lag[t, s] = (t - s) mod L
    return u @ kernel[lag].T


@dataclass(frozen=True)
class Spectra:
    """Sequence-averaged spectra: ``S_uu = mean|U_k|²``, ``S_yu = mean Y_k U_k*``, ``S_yy``."""

    s_uu: Tensor
    s_yu: Tensor
    s_yy: Tensor

    @property
    def seq_len(self) -> int:
        return int(self.s_uu.shape[-1])

    @staticmethod
    def of(u: Tensor, y: Tensor) -> Spectra:
        u_hat = torch.fft.fft(u, dim=-1)
        y_hat = torch.fft.fft(y, dim=-1)
        return Spectra(
            s_uu=(u_hat.abs() ** 2).mean(dim=0),
            s_yu=(y_hat * u_hat.conj()).mean(dim=0),
            s_yy=(y_hat.abs() ** 2).mean(dim=0),
        )

    def sigma_eta(self, transfer: Tensor) -> tuple[Tensor, Tensor]:
        """``σ = L⁻² Σ_k |G_k|² S_uu`` and ``η = L⁻² Σ_k Re[G_k* S_yu]`` for a feature ``G``.

        Differentiable in ``transfer``; the real part is taken explicitly because the loss is real
        while every intermediate is complex.
        """
        norm = float(self.seq_len) ** 2
        sigma = (transfer.abs() ** 2 * self.s_uu).sum(dim=-1) / norm
        eta = torch.real(transfer.conj() * self.s_yu).sum(dim=-1) / norm
        return sigma, eta

    def loss(self, transfer: Tensor) -> Tensor:
        """The exact MSE ``(1/(2L²)) Σ_k (S_yy - 2 Re[H* S_yu] + |H|² S_uu)`` of a model ``H``."""
        norm = 2.0 * float(self.seq_len) ** 2
        terms = self.s_yy - 2.0 * torch.real(transfer.conj() * self.s_yu)
        return (terms + transfer.abs() ** 2 * self.s_uu).sum(dim=-1) / norm


def sigma_eta_time(u: Tensor, y: Tensor, feature: Tensor) -> tuple[float, float]:
    """The time-domain definitions ``σ = mean z²``, ``η = mean y z`` (``z``: the feature signal)."""
    return float((feature**2).mean()), float((y * feature).mean())


def white_noise(n_seq: int, seq_len: int, gen: torch.Generator) -> Tensor:
    """Unit-variance Gaussian white noise, ``(M, L)``."""
    return torch.randn(n_seq, seq_len, generator=gen, dtype=DTYPE, device=gen.device)


def ar1_noise(n_seq: int, seq_len: int, coef: float, gen: torch.Generator) -> Tensor:
    """Stationary unit-variance AR(1): ``u_t = ρ u_{t-1} + √(1-ρ²) ξ_t``, started in equilibrium."""
    xi = white_noise(n_seq, seq_len, gen)
    # The recursion is a causal convolution with ρ^ℓ; the first innovation is the stationary
    # draw u_0 itself, so it is not shrunk by √(1-ρ²).
    drive = math.sqrt(1.0 - coef**2) * xi
    drive[:, 0] = xi[:, 0]
    return causal_conv(
        drive, decay_kernel(torch.tensor(coef, dtype=DTYPE, device=xi.device), seq_len)
    )


def make_input(kind: str, n_seq: int, seq_len: int, ar_coef: float, gen: torch.Generator) -> Tensor:
    """``kind`` is ``"white"`` or ``"ar1"``."""
    if kind == "white":
        return white_noise(n_seq, seq_len, gen)
    if kind == "ar1":
        return ar1_noise(n_seq, seq_len, ar_coef, gen)
    raise ValueError(f"input kind: unknown {kind!r}; choose 'white' or 'ar1'")
