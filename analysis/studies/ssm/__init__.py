"""Sidecar study: learning dynamics of linear state space models in the frequency domain.

Reproduces the claims of Smékal, Smith, Kleinman et al. (2024), "Towards a theory of learning
dynamics in deep state space models", numerically; see ``docs/studies/ssm.md``.
"""

from __future__ import annotations

from analysis.studies.ssm.params import Params
from analysis.studies.ssm.runner import run

__all__ = ["Params", "run"]
