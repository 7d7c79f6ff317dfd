"""Leak measurement for privacy mode: which planted values appear in a text that reached the
remote, verbatim or normalized (case-folded; digits only, across the separators of one number).

The benchmark (``benchmarks/privacy_leak.py``) and the tests use the same definition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# A run of digits with the separators numbers are written with: "(415) 555-0134" is one run.
_DIGIT_RUN = re.compile(r"\d[\d\s().\-/+]*\d|\d")
_SPACES = re.compile(r"\s+")
MIN_DIGITS = 4  # fewer digits than this are too common to call a leak


@dataclass(frozen=True, slots=True)
class Planted:
    entity: str
    value: str


@dataclass(frozen=True, slots=True)
class Leak:
    planted: Planted
    how: Literal["verbatim", "normalized"]


def _folded(text: str) -> str:
    return _SPACES.sub(" ", text).casefold()


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def find_leaks(text: str, planted: Iterable[Planted]) -> list[Leak]:
    """Every planted value found in ``text``, and how."""
    folded = _folded(text)
    digit_runs = [_digits(run) for run in _DIGIT_RUN.findall(text)]
    leaks = []
    for item in planted:
        if item.value in text:
            leaks.append(Leak(item, "verbatim"))
            continue
        digits = _digits(item.value)
        letters = any(char.isalpha() for char in item.value)
        if _folded(item.value) in folded or (
            not letters and len(digits) >= MIN_DIGITS and any(digits in run for run in digit_runs)
        ):
            leaks.append(Leak(item, "normalized"))
    return leaks
