"""Grading an answer against a reference: normalized exact match and token F1 (SQuAD style)."""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(answer: str, reference: str) -> float:
    predicted, expected = normalize(answer).split(), normalize(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = Counter(predicted) & Counter(expected)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def grade(answer: str, reference: str) -> dict[str, float | bool]:
    return {
        "exact_match": normalize(answer) == normalize(reference),
        "f1": round(token_f1(answer, reference), 6),
    }
