"""Sidecar study: "LoRA Learns Less and Forgets Less" (Biderman et al., 2024) at a small scale.

Tier 1 is an MLP teacher–student that isolates the mechanism (the rank of the needed update);
tier 2 pretrains a character GPT on stdlib docstrings and finetunes it on stdlib code. See
``docs/studies/lora.md``.
"""

from __future__ import annotations

from analysis.studies.lora.params import Params
from analysis.studies.lora.study import run

__all__ = ["Params", "run"]
