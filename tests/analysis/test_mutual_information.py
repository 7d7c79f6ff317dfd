"""The estimator's math on synthetic log-prob matrices, the scoring plan, and truncation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from analysis.engine_scorer import EngineScorer
from analysis.mutual_information import (
    DEFAULT_NEGATIVE_QUERY,
    Compression,
    MIBoundError,
    MIEstimate,
    check_terms_within_bound,
    estimate_from_log_probs,
    estimate_mutual_information,
    mutual_information_terms,
    reference_set_id,
)
from analysis.scorer_base import PrefixGroup, ScoredGroups, Scorer, ScorerInfo
from analysis.scoring_template import (
    ScoringTemplate,
    context_token_budget,
    truncate_middle,
    truncate_middle_text,
)
from engines.base import Engine, GenerationRequest, GenerationResult

INFO = ScorerInfo(kind="fake", model="fake-model", template="plain-v1", window=4096)


def estimate(
    matrix: Any, sources: Sequence[int], tokens: Sequence[int] | None = None
) -> MIEstimate:
    count = len(sources)
    return estimate_from_log_probs(
        matrix, sources, tokens or [10] * count, scorer=INFO, reference_set_id="ref"
    )


# --- exact answers -------------------------------------------------------------------------


def test_compressions_that_identify_their_context_give_log_n() -> None:
    matrix = np.full((4, 4), -1000.0)
    np.fill_diagonal(matrix, -3.0)
    result = estimate(matrix, [0, 1, 2, 3], [8, 8, 8, 8])
    assert result.mi_nats == pytest.approx(math.log(4), abs=1e-12)
    assert result.mi_bits == pytest.approx(2.0, abs=1e-12)
    assert result.bits_per_token == pytest.approx(2.0 / 8, abs=1e-12)
    assert result.upper_bound_nats == pytest.approx(math.log(4))


def test_hand_computed_term() -> None:
    # p(z|x) = .6, .2, .2: mixture 1/3, term log(.6 / (1/3)) = log 1.8.
    result = estimate([[math.log(0.6), math.log(0.2), math.log(0.2)]], [0], [3])
    term = result.terms[0]
    assert term.nats == pytest.approx(math.log(1.8), abs=1e-12)
    assert term.log_p_own == pytest.approx(math.log(0.6), abs=1e-12)
    assert term.log_p_mixture == pytest.approx(math.log(1 / 3), abs=1e-12)
    assert result.mi_nats == pytest.approx(math.log(1.8), abs=1e-12)
    assert result.standard_error_nats is None


def test_mean_over_terms_and_ratio_of_means_rate() -> None:
    matrix = [[0.0, -1000.0], [-5.0, -5.0]]  # first term log 2, second 0
    result = estimate(matrix, [0, 1], [10, 30])
    assert result.mi_nats == pytest.approx(math.log(2) / 2, abs=1e-12)
    assert result.mi_bits == pytest.approx(0.5, abs=1e-12)
    assert result.bits_per_token == pytest.approx(0.5 / 20, abs=1e-12)
    assert result.mean_compression_tokens == 20
    assert result.standard_error_nats == pytest.approx(math.log(2) / 2, abs=1e-12)


def test_a_compression_scored_alike_under_every_context_carries_nothing() -> None:
    rows = np.repeat(np.array([[-12.5], [-3.0], [-700.0]]), 5, axis=1)
    result = estimate(rows, [0, 2, 4])
    assert result.mi_nats == 0.0
    assert all(term.nats == 0.0 for term in result.terms)


def test_one_constant_compression_for_every_context_is_never_positive() -> None:
    # The same z from every context: the mean of log p is at most the log of the mean p (Jensen).
    rng = np.random.default_rng(0)
    for _ in range(20):
        row = rng.normal(-50, 10, size=8)
        result = estimate(np.tile(row, (8, 1)), list(range(8)))
        assert result.mi_nats <= 1e-12


def test_log_probs_far_below_float_range_do_not_underflow() -> None:
    matrix = [[-20_000.0, -20_010.0], [-30_010.0, -30_000.0]]
    result = estimate(matrix, [0, 1])
    expected = math.log(2) - math.log1p(math.exp(-10))
    assert result.mi_nats == pytest.approx(expected, abs=1e-12)


# --- the log N bound -----------------------------------------------------------------------


@pytest.mark.parametrize("spread", [1.0, 100.0, 1e4])
def test_every_term_is_at_most_log_n_on_random_matrices(spread: float) -> None:
    rng = np.random.default_rng(int(spread))
    for n in (2, 3, 16, 64):
        matrix = rng.normal(0, spread, size=(n * 2, n))
        _, _, terms = mutual_information_terms(matrix, [k % n for k in range(n * 2)])
        assert np.all(terms <= math.log(n))
        assert np.all(np.isfinite(terms))


def test_the_bound_check_rejects_a_term_above_log_n() -> None:
    check_terms_within_bound(np.array([math.log(4), -3.0]), 4)
    with pytest.raises(MIBoundError, match="term 1"):
        check_terms_within_bound(np.array([0.0, math.log(4) + 1e-9]), 4)
    with pytest.raises(MIBoundError):
        check_terms_within_bound(np.array([np.nan]), 4)


# --- raw vs clipped, serialization, provenance -----------------------------------------------


def test_negative_estimates_are_kept_raw_and_clipped_only_for_display() -> None:
    result = estimate([[-10.0, 0.0], [0.0, -10.0]], [0, 1])  # every pairing is backwards
    assert result.mi_nats < -9
    assert result.mi_bits == pytest.approx(result.mi_nats / math.log(2))
    assert result.mi_bits_display == 0.0
    assert result.bits_per_token_display == 0.0
    dumped = result.model_dump(mode="json")
    assert dumped["mi_nats"] == result.mi_nats
    assert dumped["mi_bits_display"] == 0.0
    assert "0.000 bits" in result.summary()


def test_the_estimate_round_trips_through_json() -> None:
    result = estimate_from_log_probs(
        [[0.0, -3.0], [-2.0, -1.0]],
        [0, 1],
        [4, 6],
        scorer=INFO,
        reference_set_id="r",
        keep_matrix=True,
    )
    again = MIEstimate.model_validate_json(result.model_dump_json())
    assert again == result
    assert again.log_probs == [[0.0, -3.0], [-2.0, -1.0]]
    assert {"mi_nats", "mi_bits", "bits_per_token", "n_contexts", "scorer_model"} <= set(
        result.model_dump()
    )
    assert result.scorer_model == "fake-model"
    assert result.comparability_key == "fake:fake-model:plain-v1|N=2|ref=r|negatives=compression"


def test_reference_set_id_is_stable_and_tells_sets_apart() -> None:
    assert reference_set_id(["a", "b"]) == reference_set_id(["a", "b"])
    assert reference_set_id(["a", "b"]) != reference_set_id(["b", "a"])
    assert reference_set_id(["ab", "c"]) != reference_set_id(["a", "bc"])


@pytest.mark.parametrize(
    ("matrix", "sources", "tokens", "message"),
    [
        ([[0.0]], [0], [1], "at least 2 contexts"),
        ([[0.0, np.inf]], [0], [1], "finite"),
        ([[0.0, np.nan]], [0], [1], "finite"),
        ([[0.0, -1.0]], [2], [1], "context index"),
        ([[0.0, -1.0]], [0, 1], [1], "sources"),
        ([[0.0, -1.0]], [0], [0], "token_counts"),
        ([0.0, -1.0], [0], [1], "matrix"),
    ],
)
def test_invalid_matrices_are_refused(
    matrix: Any, sources: list[int], tokens: list[int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        estimate(matrix, sources, tokens)


# --- the scoring plan and the two negative-query modes ----------------------------------------


class QueryEchoScorer(Scorer):
    """log p(z | x, q) = 0 when z quotes q, else -20, whatever the context: z carries the
    question and nothing of the document. Records the groups it was asked for."""

    def __init__(self) -> None:
        self.groups: list[PrefixGroup] = []

    def info(self) -> ScorerInfo:
        return INFO

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def score_groups(self, groups: Sequence[PrefixGroup]) -> ScoredGroups:
        self.groups.extend(groups)
        return ScoredGroups(
            [[0.0 if g.query in text else -20.0 for text in g.continuations] for g in groups]
        )


CONTEXTS = ["document A", "document B", "document C", "document D"]
QUERIES = ["who is qa", "who is qb", "who is qc", "who is qd"]
ECHOES = [Compression(context=i, text=f"you asked {q}") for i, q in enumerate(QUERIES)]


async def test_default_negatives_use_the_compressions_query_so_questions_do_not_count() -> None:
    assert DEFAULT_NEGATIVE_QUERY == "compression"
    scorer = QueryEchoScorer()
    result = await estimate_mutual_information(scorer, CONTEXTS, ECHOES, queries=QUERIES)
    assert result.mi_nats == pytest.approx(0.0, abs=1e-12)
    assert result.negative_query == "compression"
    # Every context under every compression's own query: 4 contexts x 4 queries.
    assert {(g.context, g.query) for g in scorer.groups} == {
        (c, q) for c in CONTEXTS for q in QUERIES
    }


async def test_paired_negatives_score_each_context_with_its_own_query() -> None:
    scorer = QueryEchoScorer()
    result = await estimate_mutual_information(
        scorer, CONTEXTS, ECHOES, queries=QUERIES, negative_query="context"
    )
    # The paper's pairing: only the own prefix quotes the question, so the echo scores log N.
    assert result.mi_nats == pytest.approx(math.log(4) - math.log1p(3 * math.exp(-20)), abs=1e-9)
    assert [(g.context, g.query) for g in scorer.groups] == list(
        zip(CONTEXTS, QUERIES, strict=True)
    )
    assert all(len(g.continuations) == 4 for g in scorer.groups)


async def test_with_one_query_for_all_both_modes_agree() -> None:
    for mode in ("compression", "context"):
        scorer = QueryEchoScorer()
        result = await estimate_mutual_information(
            scorer,
            CONTEXTS,
            ECHOES,
            queries="who is qa",
            negative_query=mode,
        )
        assert len(scorer.groups) == 4
        assert result.terms[0].nats == pytest.approx(0.0)


async def test_a_compressions_own_query_overrides_its_contexts() -> None:
    scorer = QueryEchoScorer()
    compressions = [Compression(context=0, text="you asked special", query="special")]
    result = await estimate_mutual_information(
        scorer, CONTEXTS[:2], compressions, queries=QUERIES[:2]
    )
    assert {g.query for g in scorer.groups} == {"special"}
    assert result.mi_nats == pytest.approx(0.0)


async def test_identical_compressions_are_scored_once_and_reference_contexts_need_none() -> None:
    scorer = QueryEchoScorer()
    compressions = [Compression(context=0, text="same"), Compression(context=1, text="same")]
    result = await estimate_mutual_information(scorer, CONTEXTS, compressions, queries="q")
    assert [g.continuations for g in scorer.groups] == [("same",)] * 4
    assert result.n_contexts == 4 and result.n_compressions == 2
    assert result.upper_bound_nats == pytest.approx(math.log(4))
    assert result.reference_set_id == reference_set_id(CONTEXTS)
    assert result.mean_compression_tokens == 1


@pytest.mark.parametrize(
    ("contexts", "queries", "compressions", "message"),
    [
        (["only one"], "q", [Compression(context=0, text="z")], "at least 2"),
        (["a", "b"], ["q"], [Compression(context=0, text="z")], "queries"),
        (["a", "b"], "q", [], "at least one"),
        (["a", " "], "q", [Compression(context=0, text="z")], "empty context"),
        (["a", "a"], "q", [Compression(context=0, text="z")], "duplicates"),
        (["a", "b"], "q", [Compression(context=2, text="z")], "not a context index"),
    ],
)
async def test_invalid_inputs_are_refused(
    contexts: list[str], queries: Any, compressions: list[Compression], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await estimate_mutual_information(
            QueryEchoScorer(), contexts, compressions, queries=queries
        )


# --- truncation and the scoring template ----------------------------------------------------


def test_truncate_middle_keeps_both_ends() -> None:
    tokens = list(range(10))
    assert truncate_middle(tokens, 10) == tokens
    assert truncate_middle(tokens, 4) == [0, 1, 8, 9]
    assert truncate_middle(tokens, 5) == [0, 1, 2, 8, 9]
    assert truncate_middle(tokens, 1) == [0]
    with pytest.raises(ValueError):
        truncate_middle(tokens, 0)


def test_context_budget_reserves_template_query_and_longest_compression() -> None:
    assert context_token_budget(1000, 40, 20, 100) == 840
    with pytest.raises(ValueError, match="at least"):
        context_token_budget(200, 40, 20, 120)


def test_truncate_middle_text_fits_the_budget_and_keeps_the_ends() -> None:
    words = " ".join(f"w{i}" for i in range(100))

    def count(text: str) -> int:
        return len(text.split())

    cut = truncate_middle_text(words, 10, count)
    assert count(cut) <= 10
    assert cut.startswith("w0 w1") and cut.endswith("w98 w99")
    assert truncate_middle_text("short text", 10, count) == "short text"


class FakeChatTokenizer:
    def apply_chat_template(self, messages: list[dict[str, str]], **_: Any) -> str:
        return f"<user>{messages[0]['content']}</user><assistant>"


def test_chat_template_splits_around_context_and_query() -> None:
    template = ScoringTemplate.from_chat_template(FakeChatTokenizer())
    rendered = template.render("THE DOC", "THE QUESTION")
    assert rendered.startswith("<user>") and rendered.endswith("THE QUESTION</user><assistant>")
    assert "Document:\nTHE DOC\n\nQuestion: " in rendered
    assert (
        ScoringTemplate.plain()
        .render("D", "Q")
        .endswith("Document:\nD\n\nQuestion: Q\n\nAnswer:\n")
    )


# --- the Engine adapter -------------------------------------------------------------------


class WordEngine(Engine):
    """A scoring engine over whitespace words: log p = -(words of continuation)."""

    kind = "fake"
    supports_score = True

    def __init__(self, context_window: int) -> None:
        super().__init__("word-model", context_window)
        self.prefixes: list[str] = []

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        raise NotImplementedError

    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        self.prefixes.append(prefix)
        return [-float(self.count_tokens(text)) for text in continuations]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


async def test_engine_scorer_truncates_to_one_budget_and_records_the_engine() -> None:
    engine = WordEngine(context_window=120)
    long_context = " ".join(f"w{i}" for i in range(200))
    scorer = EngineScorer(engine)
    compressions = [Compression(context=0, text="a b c"), Compression(context=1, text="d e")]
    result = await estimate_mutual_information(
        scorer, [long_context, "short document"], compressions, queries="which word?"
    )
    budget = result.context_token_budget
    assert budget is not None and result.truncated_contexts == 1
    assert all(engine.count_tokens(p) <= 120 - 3 for p in engine.prefixes)
    assert any("w0 w1" in p and "w199" in p and "w100" not in p for p in engine.prefixes)
    assert result.scorer_model == "word-model" and result.scorer.kind == "engine-fake"
    assert result.mi_nats == pytest.approx(0.0)


async def test_engine_scorer_refuses_an_engine_that_cannot_score() -> None:
    engine = WordEngine(context_window=100)
    engine.supports_score = False  # type: ignore[misc]
    with pytest.raises(ValueError, match="cannot score"):
        EngineScorer(engine)
