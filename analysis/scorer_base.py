"""What the mutual-information estimator needs from a scoring model: log p(z | x, q) in bulk.

The estimator hands a scorer *groups*: one context with one query, and every compression to
be scored after that prefix. Grouping by prefix is what lets a scorer compute each prefix once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True, slots=True)
class PrefixGroup:
    """Score every continuation after the prefix built from ``context`` and ``query``."""

    context: str
    query: str
    continuations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ScoredGroups:
    """Summed natural-log probabilities, ``log_probs[g][c]`` for continuation c of group g.

    ``context_token_budget`` is the most context tokens any prefix kept (None: no limit was
    applied); ``truncated_contexts`` counts the groups whose context was cut to it.
    """

    log_probs: list[list[float]]
    context_token_budget: int | None = None
    truncated_contexts: int = 0


class ScorerInfo(BaseModel):
    """Which model scored, how: estimates are comparable only when this (and N, and the
    reference set) match."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    model: str
    template: str
    window: int

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.model}:{self.template}"


class Scorer(ABC):
    """A teacher-forced scoring model behind an async, group-batched interface."""

    @abstractmethod
    def info(self) -> ScorerInfo:
        """The model, template and window this scorer uses (recorded with every estimate)."""

    @abstractmethod
    async def score_groups(self, groups: Sequence[PrefixGroup]) -> ScoredGroups:
        """Score every group; all contexts of one call are truncated to one shared budget."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes when scored as a continuation (the denominator of bits/token)."""
