"""The entity types privacy mode knows: what each is called in its placeholders, and how its
values are compared (so ``(555) 123-4567`` and ``555.123.4567`` are one value)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["pattern", "ner"]
Normalizer = Callable[[str], str]

_NON_DIGITS = re.compile(r"\D+")
_NON_ALNUM = re.compile(r"[^0-9A-Za-z]+")
_SPACES = re.compile(r"\s+")


def digits_only(value: str) -> str:
    return _NON_DIGITS.sub("", value)


def alnum_upper(value: str) -> str:
    return _NON_ALNUM.sub("", value).upper()


def folded(value: str) -> str:
    """Case-folded, inner whitespace collapsed, surrounding punctuation dropped."""
    return _SPACES.sub(" ", value).strip(" \t\n.,;:!?'\"()[]{}").casefold()


@dataclass(frozen=True, slots=True)
class EntityType:
    name: str  # Presidio's entity name, e.g. PHONE_NUMBER
    label: str  # in placeholders: <PHONE_1>
    kind: Kind
    normalize: Normalizer = folded


BUILTIN: dict[str, EntityType] = {
    entity.name: entity
    for entity in (
        EntityType("EMAIL_ADDRESS", "EMAIL", "pattern"),
        EntityType("PHONE_NUMBER", "PHONE", "pattern", digits_only),
        EntityType("CREDIT_CARD", "CARD", "pattern", digits_only),
        EntityType("IBAN_CODE", "IBAN", "pattern", alnum_upper),
        EntityType("US_SSN", "SSN", "pattern", digits_only),
        EntityType("IP_ADDRESS", "IP", "pattern"),
        EntityType("URL", "URL", "pattern"),
        EntityType("DATE_OF_BIRTH", "DOB", "pattern"),
        EntityType("ACCOUNT_NUMBER", "ACCOUNT", "pattern", alnum_upper),
        EntityType("STREET_ADDRESS", "ADDRESS", "pattern"),
        EntityType("PERSON", "PERSON", "ner"),
        EntityType("LOCATION", "LOCATION", "ner"),
        EntityType("ORGANIZATION", "ORG", "ner"),
    )
}

# Values whose digits identify them: matched again wherever the same digits reappear.
DIGIT_NORMALIZED = frozenset(
    name for name, entity in BUILTIN.items() if entity.normalize is digits_only
)
