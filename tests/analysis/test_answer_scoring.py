"""Answer scoring edge cases: normalization, F1, numbers with units and scale words."""

from __future__ import annotations

import pytest

from analysis.answer_scoring import (
    exact_match,
    normalize,
    numbers_in,
    numeric_match,
    score_answer,
    token_f1,
)


def test_normalize_drops_case_punctuation_and_articles() -> None:
    assert normalize("  The  Eiffel-Tower, in PARIS! ") == "eiffeltower in paris"
    assert exact_match("an apple", "Apple.")


def test_token_f1_partial_and_empty() -> None:
    assert token_f1("red blue", "red green") == pytest.approx(0.5)
    assert token_f1("", "") == 1.0
    assert token_f1("", "x") == 0.0
    assert token_f1("x y", "z") == 0.0


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("72.7 billion", [72.7e9]),
        ("$72,705 million", [72_705e6]),
        ("revenue fell -3.5% to 12k", [-3.5, 12e3]),
        ("no numbers", []),
    ],
)
def test_numbers_in_reads_scale_words(text: str, values: list[float]) -> None:
    assert numbers_in(text) == pytest.approx(values)


def test_numeric_match_with_tolerance() -> None:
    assert numeric_match("about 72.7 billion dollars", "$72,705 million")
    assert not numeric_match("72.7 million", "$72,705 million")
    assert numeric_match("4,817", "4817")
    assert not numeric_match("4818", "4817", rel_tol=0.0)
    # A reference with several numbers is not a numeric answer.
    assert not numeric_match("1 and 2", "1 and 2")


def test_score_answer_takes_the_best_reference_and_accepts_short_containing_answers() -> None:
    score = score_answer("The access code is 4817.", ["1234", "4817"])
    assert score.correct and score.exact_match
    long_answer = "It could be 4817 " + "or something else entirely " * 10
    assert not score_answer(long_answer, ["nothing like it"]).correct
    assert not score_answer("I do not know", ["4817"]).correct
    with pytest.raises(ValueError, match="answer"):
        score_answer("x", [])
