"""How right an answer is: normalized exact match, token F1, and numeric match with tolerance.

Numbers are compared by value after reading units and scale words, so "72.7 billion" matches
"$72,705 million" within the relative tolerance.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SCALES = {
    "thousand": 1e3, "k": 1e3, "million": 1e6, "mn": 1e6, "m": 1e6, "billion": 1e9, "bn": 1e9,
    "b": 1e9, "trillion": 1e12, "tn": 1e12, "%": 1.0, "percent": 1.0,
}  # fmt: skip
_NUMBER = re.compile(
    r"(?P<sign>-)?\$?\s*(?P<num>\d[\d,]*(?:\.\d+)?|\.\d+)\s*(?P<scale>thousand|million|billion|"
    r"trillion|mn|bn|tn|k|m|b|percent|%)?\b",
    re.IGNORECASE,
)


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD convention)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> bool:
    return normalize(prediction) == normalize(reference)


def token_f1(prediction: str, reference: str) -> float:
    predicted, expected = normalize(prediction).split(), normalize(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def numbers_in(text: str) -> list[float]:
    """Every number in ``text`` as a value, with scale words applied ("1.5 million" -> 1.5e6)."""
    values = []
    for match in _NUMBER.finditer(text):
        value = float(match.group("num").replace(",", ""))
        scale = (match.group("scale") or "").lower()
        value *= _SCALES.get(scale, 1.0)
        values.append(-value if match.group("sign") else value)
    return values


def numeric_match(prediction: str, reference: str, rel_tol: float = 0.01) -> bool:
    """True when the reference holds one number and the prediction states it within tolerance."""
    expected = numbers_in(reference)
    if len(expected) != 1:
        return False
    target = expected[0]
    return any(
        abs(value - target) <= rel_tol * max(abs(target), 1e-12) for value in numbers_in(prediction)
    )


@dataclass(frozen=True)
class AnswerScore:
    exact_match: bool
    f1: float
    numeric_match: bool

    @property
    def correct(self) -> bool:
        """The harness's accuracy: exact, or numerically equal, or the reference contained
        verbatim (after normalization) in a short answer."""
        return self.exact_match or self.numeric_match


def score_answer(prediction: str, references: list[str], rel_tol: float = 0.01) -> AnswerScore:
    """Best score of ``prediction`` against any of ``references``."""
    if not references:
        raise ValueError("answer: at least one reference answer is needed")
    prediction_norm = normalize(prediction)
    exact = any(exact_match(prediction, ref) for ref in references)
    # A short answer that contains the whole reference ("The code is 4817.") counts as exact.
    contained = any(
        normalize(ref) and f" {normalize(ref)} " in f" {prediction_norm} "
        for ref in references
        if len(prediction_norm.split()) <= 4 * max(1, len(normalize(ref).split())) + 8
    )
    return AnswerScore(
        exact_match=exact or contained,
        f1=max(token_f1(prediction, ref) for ref in references),
        numeric_match=any(numeric_match(prediction, ref, rel_tol) for ref in references),
    )


def grade(answer: str, reference: str) -> dict[str, float | bool]:
    """A task's accuracy against its one reference answer, as stored with the task."""
    score = score_answer(answer, [reference])
    return {"exact_match": score.exact_match, "f1": round(score.f1, 6)}
