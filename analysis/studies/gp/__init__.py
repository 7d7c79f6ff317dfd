"""GP study: bias-free scalable Gaussian processes via randomized truncations (RR-CG, RR-RFF).

Reproduces Potapczynski, Wu, Biderman et al. (ICML 2021): truncated CG biases hyperparameters
one way, random Fourier features the other; Russian-roulette truncation removes the bias.
"""

from __future__ import annotations

from analysis.studies.gp.params import Params
from analysis.studies.gp.study import run

__all__ = ["Params", "run"]
