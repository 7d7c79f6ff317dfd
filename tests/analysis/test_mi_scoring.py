"""Sanity checks of the estimator with the real bundled model scoring through transformers.

Eight short fictional company profiles (~130 tokens each) are the contexts; compressions are
a verbatim sentence of each (~30 tokens) and one constant non-answer. One prefix-reuse scoring
of that set feeds the verbatim, constant and shuffled checks; the naive full-pass scorer
re-scores four of the contexts for the agreement check.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.mutual_information import (
    Compression,
    MIEstimate,
    estimate_from_log_probs,
    estimate_mutual_information,
)
from analysis.scoring import TransformersPrefixScorer

pytestmark = pytest.mark.model

N = 8
QUERY = "What happened to the company after it was founded?"
CONSTANT = "The document does not say."
FIRST = ["Ingrid", "Tomas", "Aiko", "Rafael", "Nadia", "Olu", "Priya", "Viktor"]
LAST = ["Halvorsen", "Okafor", "Tanaka", "Moreau", "Castillo", "Brandt", "Iyer", "Kowalski"]
CITY = ["Tromsø", "Lagos", "Sapporo", "Lyon", "Valparaíso", "Leipzig", "Pune", "Gdańsk"]
PRODUCT = [
    "ceramic valves",
    "solar kilns",
    "glass bearings",
    "river turbines",
    "paper batteries",
    "salt lamps",
    "wool insulation",
    "copper sieves",
]


def company_profiles(seed: int = 0) -> tuple[list[str], list[str]]:
    """N distinct profiles and, for each, one verbatim sentence from its middle."""
    rng = random.Random(seed)
    contexts, excerpts = [], []
    for i in range(N):
        last, city, product = LAST[i], CITY[i], PRODUCT[i]
        founded, staff, revenue = (
            rng.randint(1880, 1990),
            rng.randint(40, 9000),
            rng.randint(3, 900),
        )
        excerpt = (
            f"In {founded + 31} the firm opened a second plant, and by then {staff} people "
            f"worked for {last} & Sons."
        )
        contexts.append(
            f"{last} & Sons is a manufacturer of {product} based in {city}. The company was "
            f"founded in {founded} by {FIRST[i]} {last}, who had trained as an engineer before "
            f"returning home. {excerpt} Last year it reported revenue of {revenue} million "
            f"euros, most of it from exports of {product}. The current chief executive, "
            f"{FIRST[(i + 3) % N]} {LAST[(i + 5) % N]}, has said the company will stay in {city} "
            f"and plans to double production of {product} within five years."
        )
        excerpts.append(excerpt)
    return contexts, excerpts


@dataclass(frozen=True)
class Scored:
    contexts: list[str]
    excerpts: list[str]
    estimate: MIEstimate  # excerpts then constants, every one scored against all N contexts

    @property
    def matrix(self) -> np.ndarray:
        assert self.estimate.log_probs is not None
        return np.asarray(self.estimate.log_probs)

    def sub_estimate(self, rows: slice, sources: list[int]) -> MIEstimate:
        return estimate_from_log_probs(
            self.matrix[rows],
            sources,
            [1] * len(sources),
            scorer=self.estimate.scorer,
            reference_set_id=self.estimate.reference_set_id,
        )


@pytest.fixture(scope="module")
def scorer(model_dir: Path) -> Iterator[TransformersPrefixScorer]:
    # One thread: on a shared 2-core machine two spinning OpenMP threads run several times
    # slower than one; on an idle one the cost is under 2x on this small workload.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield TransformersPrefixScorer.from_pretrained(
            model_dir, model_name="smollm2-135m-instruct"
        )
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
async def scored(scorer: TransformersPrefixScorer) -> Scored:
    contexts, excerpts = company_profiles()
    compressions = [Compression(context=i, text=text) for i, text in enumerate(excerpts)]
    compressions += [Compression(context=i, text=CONSTANT) for i in range(N)]
    estimate = await estimate_mutual_information(
        scorer, contexts, compressions, queries=QUERY, keep_matrix=True
    )
    return Scored(contexts, excerpts, estimate)


def test_a_verbatim_excerpt_carries_close_to_log_n(scored: Scored) -> None:
    verbatim = scored.sub_estimate(slice(0, N), list(range(N)))
    assert verbatim.mi_nats >= 0.9 * math.log(N)
    assert scored.estimate.n_contexts == N
    assert scored.estimate.scorer_model == "smollm2-135m-instruct"
    assert scored.estimate.truncated_contexts == 0


def test_a_constant_compression_carries_nothing(scored: Scored) -> None:
    constant = scored.sub_estimate(slice(N, 2 * N), list(range(N)))
    assert constant.mi_nats <= 0.05


def test_shuffled_pairing_carries_nothing(scored: Scored) -> None:
    # Each excerpt credited to the next context: the true source sits among the negatives.
    shuffled = scored.sub_estimate(slice(0, N), [(i + 1) % N for i in range(N)])
    assert shuffled.mi_nats <= 0.0


def test_every_term_is_at_most_log_n(scored: Scored) -> None:
    for term in scored.estimate.terms:
        assert term.nats <= math.log(N)
    assert scored.estimate.upper_bound_nats == pytest.approx(math.log(N))


async def test_prefix_reuse_agrees_with_naive_full_passes(
    scored: Scored, scorer: TransformersPrefixScorer
) -> None:
    half = N // 2
    compressions = [Compression(context=i, text=scored.excerpts[i]) for i in range(half)]
    compressions += [Compression(context=i, text=CONSTANT) for i in range(half)]
    naive = await estimate_mutual_information(
        scorer.naive(), scored.contexts[:half], compressions, queries=QUERY, keep_matrix=True
    )
    reused = np.concatenate(
        [scored.matrix[:half, :half], scored.matrix[N : N + half, :half]], axis=0
    )
    reused_estimate = estimate_from_log_probs(
        reused,
        [c.context for c in compressions],
        [1] * len(compressions),
        scorer=naive.scorer,
        reference_set_id=naive.reference_set_id,
    )
    assert naive.log_probs is not None
    assert np.max(np.abs(np.asarray(naive.log_probs) - reused)) < 1e-3
    for naive_term, reused_term in zip(naive.terms, reused_estimate.terms, strict=True):
        assert abs(naive_term.nats - reused_term.nats) < 1e-4


async def test_contexts_longer_than_the_window_are_cut_alike_in_both_modes(
    scored: Scored, scorer: TransformersPrefixScorer
) -> None:
    small = scorer.variant(max_window=120)
    compressions = [Compression(context=i, text=scored.excerpts[i]) for i in range(2)]
    reused = await estimate_mutual_information(
        small, scored.contexts[:2], compressions, queries=QUERY, keep_matrix=True
    )
    naive = await estimate_mutual_information(
        small.naive(), scored.contexts[:2], compressions, queries=QUERY, keep_matrix=True
    )
    assert reused.truncated_contexts == 2
    assert reused.context_token_budget is not None and reused.context_token_budget < 100
    assert reused.scorer.window == 120
    assert reused.log_probs is not None and naive.log_probs is not None
    assert np.allclose(reused.log_probs, naive.log_probs, atol=1e-3)
