"""Plain gradient descent, by autograd, on the actual convolution and on the matched linear network.

These are the "ground truth" runs the theory is checked against: they never use ``σ``, ``η`` or
``g_k``; the model output is the convolution of the input with the kernel built from the current
parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from analysis.studies.ssm.spectral import DTYPE, decay_kernel
from analysis.studies.ssm.theory import Array

Conv = Callable[[Tensor], Tensor]


def make_conv(u: Tensor, mode: str) -> Conv:
    """A function ``kernel -> output`` convolving the fixed input ``u`` circularly or causally.

    The input's FFT is cached: only the kernel changes from step to step.
    """
    seq_len = u.shape[-1]
    n_fft = {"circular": seq_len, "causal": 2 * seq_len}.get(mode)
    if n_fft is None:
        raise ValueError(f"convolution mode: unknown {mode!r}; choose 'circular' or 'causal'")
    u_hat = torch.fft.rfft(u, n=n_fft, dim=-1)

    def conv(kernel: Tensor) -> Tensor:
        out = torch.fft.irfft(u_hat * torch.fft.rfft(kernel, n=n_fft, dim=-1), n=n_fft, dim=-1)
        result: Tensor = out[..., :seq_len]
        return result

    return conv


@dataclass(frozen=True)
class Trace:
    """Parameters after every step; ``t_over_tau[i] = i · lr``."""

    t_over_tau: Array
    b: Array  # (steps + 1, N)
    c: Array  # (steps + 1, N)
    a: Array  # (steps + 1,)
    loss: Array  # (steps + 1,) loss before each step; the last entry is the final loss

    @property
    def w(self) -> Array:
        """``w = Σ_n c_n b_n``."""
        return np.asarray((self.b * self.c).sum(axis=1))


def gd_ssm(
    conv: Conv,
    y: Tensor,
    a0: float,
    b0: Tensor,
    c0: Tensor,
    lr: float,
    steps: int,
    learn_a: bool = False,
) -> Trace:
    """GD on ``(1/(2ML)) Σ (y - conv(k))²``, ``k_ℓ = (Σ_n c_n b_n) a^ℓ`` (N units sharing ``a``).

    When ``learn_a`` is set, ``a = tanh(θ)`` is trained too: the parameterization keeps ``|a| < 1``
    for any step, which a clamp would not do smoothly.
    """
    device = y.device
    seq_len = y.shape[-1]
    theta = torch.tensor(np.arctanh(a0), dtype=DTYPE, device=device, requires_grad=learn_a)
    b = b0.detach().clone().to(device).requires_grad_(True)
    c = c0.detach().clone().to(device).requires_grad_(True)
    n_units = b.shape[0]
    b_hist = torch.empty(steps + 1, n_units, dtype=DTYPE, device=device)
    c_hist = torch.empty_like(b_hist)
    a_hist = torch.empty(steps + 1, dtype=DTYPE, device=device)
    loss_hist = torch.empty(steps + 1, dtype=DTYPE, device=device)
    fixed_base = decay_kernel(torch.tanh(theta.detach()), seq_len)
    for step in range(steps + 1):
        base = decay_kernel(torch.tanh(theta), seq_len) if learn_a else fixed_base
        loss = 0.5 * ((conv((c * b).sum() * base) - y) ** 2).mean()
        b_hist[step], c_hist[step] = b.detach(), c.detach()
        a_hist[step] = torch.tanh(theta.detach())
        loss_hist[step] = loss.detach()
        if step == steps:
            break
        params = [b, c, theta] if learn_a else [b, c]
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= lr * g
    return Trace(
        t_over_tau=np.arange(steps + 1, dtype=np.float64) * lr,
        b=b_hist.cpu().numpy(),
        c=c_hist.cpu().numpy(),
        a=a_hist.cpu().numpy(),
        loss=loss_hist.cpu().numpy(),
    )


def matched_linear_network_data(
    sigma: float, eta: float, n_samples: int, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Samples ``x ~ N(0, σ)`` rescaled so that ``mean x² = σ`` exactly, and ``y = (η/σ) x``.

    Exact second moments make the network's loss the same quadratic in ``w = W₂W₁`` as the SSM's,
    so any trajectory difference is the theory's fault, not sampling noise.
    """
    x = torch.randn(n_samples, dtype=DTYPE, generator=gen, device=gen.device)
    x = x * np.sqrt(sigma) / x.pow(2).mean().sqrt()
    return x, (eta / sigma) * x


def gd_two_layer(x: Tensor, y: Tensor, w1_0: float, w2_0: float, lr: float, steps: int) -> Trace:
    """GD on ``(1/2P) Σ (y - W₂ W₁ x)²``: the scalar two-layer network of Saxe et al."""
    w1 = torch.tensor(w1_0, dtype=DTYPE, device=x.device, requires_grad=True)
    w2 = torch.tensor(w2_0, dtype=DTYPE, device=x.device, requires_grad=True)
    hist = torch.empty(steps + 1, 3, dtype=DTYPE, device=x.device)
    for step in range(steps + 1):
        loss = 0.5 * ((y - w2 * w1 * x) ** 2).mean()
        hist[step, 0], hist[step, 1], hist[step, 2] = w1.detach(), w2.detach(), loss.detach()
        if step == steps:
            break
        g1, g2 = torch.autograd.grad(loss, [w1, w2])
        with torch.no_grad():
            w1 -= lr * g1
            w2 -= lr * g2
    out = hist.cpu().numpy()
    return Trace(
        t_over_tau=np.arange(steps + 1, dtype=np.float64) * lr,
        b=out[:, :1],
        c=out[:, 1:2],
        a=np.zeros(steps + 1),
        loss=out[:, 2],
    )
