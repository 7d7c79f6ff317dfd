"""How much of a context crossed into its compression: a Monte-Carlo estimate of I(X; Z).

For contexts x_1..x_N and compressions z_k, each written from its source context s(k):

    I(X;Z) ≈ mean_k [ log p(z_k | x_s(k)) − log( (1/N) Σ_l p(z_k | x_l) ) ]

(He, Narayan, Khare et al., 2025, "An Information Theoretic Perspective on Agentic System
Design"). log p(z | x) is a scoring model's summed token log-probability of z, teacher-forced
after a fixed template holding x and a query. Each term is at most log N: the own context is one
of the N in the mixture. See docs/mutual_information.md for how to read and compare the numbers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, computed_field

from analysis.scorer_base import PrefixGroup, Scorer, ScorerInfo

NegativeQuery = Literal["compression", "context"]
# Score every context with the compression's own query: the estimate is then I(X; Z | Q = q),
# information about the document, not about which question was asked (see the docs).
DEFAULT_NEGATIVE_QUERY: NegativeQuery = "compression"


class MIBoundError(AssertionError):
    """A per-compression term exceeded log N: the implementation, not the data, is wrong."""


class Compression(BaseModel):
    """A compression written from ``contexts[context]``; ``query`` defaults to that context's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    context: int = Field(ge=0)
    text: str = Field(min_length=1)
    query: str | None = None


class MITerm(BaseModel):
    """One compression's contribution, in nats: ``nats = log_p_own - log_p_mixture``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    compression: int
    context: int
    tokens: int
    log_p_own: float
    log_p_mixture: float
    nats: float


class MIEstimate(BaseModel):
    """The estimate, its provenance, and every term. ``mi_*`` are raw (may be < 0)."""

    # "ignore": the computed fields a dump carries are recomputed when it is read back.
    model_config = ConfigDict(extra="ignore", frozen=True)

    mi_nats: float
    mi_bits: float
    bits_per_token: float
    upper_bound_nats: float
    standard_error_nats: float | None
    n_contexts: int
    n_compressions: int
    mean_compression_tokens: float
    scorer_model: str
    scorer: ScorerInfo
    reference_set_id: str
    negative_query: NegativeQuery
    context_token_budget: int | None = None
    truncated_contexts: int = 0
    terms: list[MITerm]
    log_probs: list[list[float]] | None = Field(
        default=None, description="the full matrix log p(z_k | x_l), when asked for"
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mi_bits_display(self) -> float:
        """Clipped at 0 for display only: a negative estimate means 'nothing measurable'."""
        return max(self.mi_bits, 0.0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def bits_per_token_display(self) -> float:
        return max(self.bits_per_token, 0.0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def comparability_key(self) -> str:
        """Estimates compare only when this matches: same scorer, N, reference set, query mode."""
        return (
            f"{self.scorer.label}|N={self.n_contexts}|ref={self.reference_set_id}"
            f"|negatives={self.negative_query}"
        )

    def summary(self) -> str:
        return (
            f"I(X;Z) = {self.mi_bits_display:.3f} bits "
            f"({self.bits_per_token_display:.4f} bits/token; raw {self.mi_nats:.4f} nats, "
            f"bound {self.upper_bound_nats:.3f}) over N={self.n_contexts}, "
            f"{self.n_compressions} compressions, scorer {self.scorer.label}"
        )


def mutual_information_terms(
    log_probs: np.typing.ArrayLike, sources: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-compression ``(log_p_own, log_p_mixture, nats)`` from a [K, N] log-prob matrix.

    Computed as ``log N − logsumexp_l(L[k, l] − L[k, s(k)])`` in float64: the own context
    contributes exp(0) = 1 to the sum, so the log is ≥ 0 and every term ≤ log N exactly.
    """
    matrix = np.asarray(log_probs, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 1:
        raise ValueError(f"log_probs: need a [compressions, contexts] matrix, got {matrix.shape}")
    count, n_contexts = matrix.shape
    if n_contexts < 2:
        raise ValueError(f"log_probs: need at least 2 contexts, got {n_contexts}")
    if len(sources) != count:
        raise ValueError(f"sources: {len(sources)} given for {count} compressions")
    source_index = np.asarray(sources, dtype=np.int64)
    if source_index.size and (source_index.min() < 0 or source_index.max() >= n_contexts):
        raise ValueError(f"sources: every source must be a context index in [0, {n_contexts})")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("log_probs: every log-probability must be finite")
    own = matrix[np.arange(count), source_index]
    relative = matrix - own[:, None]
    peak = relative.max(axis=1)  # ≥ 0: the own column is 0
    log_sum = peak + np.log(np.exp(relative - peak[:, None]).sum(axis=1))
    log_n = math.log(n_contexts)
    terms = log_n - log_sum
    check_terms_within_bound(terms, n_contexts)
    return own, own - terms, terms


def check_terms_within_bound(terms: np.ndarray, n_contexts: int) -> None:
    """Raise :class:`MIBoundError` unless every term is ≤ log N (NaN fails too)."""
    bound = math.log(n_contexts)
    outside = np.flatnonzero(~(terms <= bound))
    if outside.size:
        first = int(outside[0])
        raise MIBoundError(
            f"term {first} is {terms[first]!r} nats, above log N = {bound!r} (N={n_contexts})"
        )


def estimate_from_log_probs(
    log_probs: np.typing.ArrayLike,
    sources: Sequence[int],
    token_counts: Sequence[int],
    *,
    scorer: ScorerInfo,
    reference_set_id: str,
    negative_query: NegativeQuery = DEFAULT_NEGATIVE_QUERY,
    context_token_budget: int | None = None,
    truncated_contexts: int = 0,
    keep_matrix: bool = False,
) -> MIEstimate:
    """The estimate from an already-scored matrix ``log_probs[k][l] = log p(z_k | x_l)``."""
    own, mixture, terms = mutual_information_terms(log_probs, sources)
    if len(token_counts) != len(terms) or min(token_counts) < 1:
        raise ValueError("token_counts: one count >= 1 per compression is needed")
    n_contexts = int(np.asarray(log_probs).shape[1])
    mi_nats = float(terms.mean())
    mi_bits = mi_nats / math.log(2)
    mean_tokens = float(np.mean(token_counts))
    standard_error = float(terms.std(ddof=1) / math.sqrt(len(terms))) if len(terms) > 1 else None
    return MIEstimate(
        mi_nats=mi_nats,
        mi_bits=mi_bits,
        # The rate is a ratio of means (MI over the mean compression length), as in the paper.
        bits_per_token=mi_bits / mean_tokens,
        upper_bound_nats=math.log(n_contexts),
        standard_error_nats=standard_error,
        n_contexts=n_contexts,
        n_compressions=len(terms),
        mean_compression_tokens=mean_tokens,
        scorer_model=scorer.model,
        scorer=scorer,
        reference_set_id=reference_set_id,
        negative_query=negative_query,
        context_token_budget=context_token_budget,
        truncated_contexts=truncated_contexts,
        terms=[
            MITerm(
                compression=k,
                context=int(sources[k]),
                tokens=int(token_counts[k]),
                log_p_own=float(own[k]),
                log_p_mixture=float(mixture[k]),
                nats=float(terms[k]),
            )
            for k in range(len(terms))
        ],
        log_probs=np.asarray(log_probs, dtype=np.float64).tolist() if keep_matrix else None,
    )


def reference_set_id(contexts: Sequence[str]) -> str:
    """A stable id of the context set (order included): equal ids, equal reference sets."""
    digest = hashlib.sha256()
    for context in contexts:
        digest.update(context.encode())
        digest.update(b"\x00")
    return f"sha256:{digest.hexdigest()[:16]}"


@dataclass(frozen=True, slots=True)
class ScoringPlan:
    """Prefix groups to score and where each (compression k, context l) cell's score lands."""

    groups: list[PrefixGroup]
    cells: list[tuple[int, int, int, int]]  # (k, l, group, continuation within the group)


def plan_scoring(
    contexts: Sequence[str],
    queries: Sequence[str],
    compressions: Sequence[Compression],
    negative_query: NegativeQuery,
) -> ScoringPlan:
    """One group per distinct (context, query) prefix; each distinct text scored once in it."""
    slots: dict[tuple[int, str], tuple[int, dict[str, int]]] = {}
    cells: list[tuple[int, int, int, int]] = []
    for k, compression in enumerate(compressions):
        own_query = (
            compression.query if compression.query is not None else queries[compression.context]
        )
        for other in range(len(contexts)):  # the formula's l
            use_own = negative_query == "compression" or other == compression.context
            query = own_query if use_own else queries[other]
            group, texts = slots.setdefault((other, query), (len(slots), {}))
            cells.append((k, other, group, texts.setdefault(compression.text, len(texts))))
    groups = [
        PrefixGroup(contexts[other], query, tuple(texts))
        for (other, query), (_, texts) in slots.items()  # insertion order = group index
    ]
    return ScoringPlan(groups, cells)


async def estimate_mutual_information(
    scorer: Scorer,
    contexts: Sequence[str],
    compressions: Sequence[Compression],
    *,
    queries: str | Sequence[str],
    negative_query: NegativeQuery = DEFAULT_NEGATIVE_QUERY,
    reference_set: str | None = None,
    keep_matrix: bool = False,
) -> MIEstimate:
    """Score every compression against every context with ``scorer`` and estimate I(X; Z).

    ``contexts`` are all N contexts: those the compressions came from plus any reference
    contexts (which need no compressions of their own). ``queries`` is one query per context,
    or one for all.
    """
    query_list = [queries] * len(contexts) if isinstance(queries, str) else list(queries)
    _validate(contexts, query_list, compressions, negative_query)
    plan = plan_scoring(contexts, query_list, compressions, negative_query)
    scored = await scorer.score_groups(plan.groups)
    if [len(row) for row in scored.log_probs] != [len(g.continuations) for g in plan.groups]:
        raise ValueError("scorer: returned a different number of scores than it was asked for")
    matrix = np.full((len(compressions), len(contexts)), np.nan)
    for k, other, group, continuation in plan.cells:
        matrix[k, other] = scored.log_probs[group][continuation]
    return estimate_from_log_probs(
        matrix,
        [c.context for c in compressions],
        [scorer.count_tokens(c.text) for c in compressions],
        scorer=scorer.info(),
        reference_set_id=reference_set or reference_set_id(contexts),
        negative_query=negative_query,
        context_token_budget=scored.context_token_budget,
        truncated_contexts=scored.truncated_contexts,
        keep_matrix=keep_matrix,
    )


def _validate(
    contexts: Sequence[str],
    queries: Sequence[str],
    compressions: Sequence[Compression],
    negative_query: NegativeQuery,
) -> None:
    if len(contexts) < 2:
        raise ValueError(f"contexts: need at least 2, got {len(contexts)}")
    if len(queries) != len(contexts):
        raise ValueError(f"queries: {len(queries)} given for {len(contexts)} contexts")
    if not compressions:
        raise ValueError("compressions: at least one is needed")
    seen: dict[tuple[str, str], int] = {}
    for index, context in enumerate(contexts):
        if not context.strip():
            raise ValueError(f"contexts[{index}]: empty context")
        # A duplicate would sit twice in every mixture and bias each term down by up to log 2.
        key = (context, queries[index] if negative_query == "context" else "")
        if key in seen:
            raise ValueError(f"contexts[{index}]: duplicates contexts[{seen[key]}]")
        seen[key] = index
    for index, compression in enumerate(compressions):
        if compression.context >= len(contexts):
            raise ValueError(
                f"compressions[{index}].context: {compression.context} is not a context index"
            )
