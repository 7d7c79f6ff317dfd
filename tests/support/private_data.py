"""Planted personal data for the privacy tests, and a remote that fails on any of it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from analysis.privacy_leaks import Planted, find_leaks
from engines.base import GenerationRequest, GenerationResult
from support.scripted_engine import ScriptedEngine

NAME = "Maria Gonzalez"
PHONE = "(415) 555-0134"
EMAIL = "maria.gonzalez@example.org"
SSN = "536-22-8761"
CARD = "4111 1111 1111 1111"
PLANTED = [NAME, PHONE, EMAIL, SSN, CARD]
PAGES = [
    "Intake notes. The clinic opened at nine and the weather was mild.",
    f"Patient {NAME} can be reached at {PHONE} or {EMAIL}. SSN {SSN}.",
    f"Billing: card {CARD} was charged for the visit.",
]
QUESTION = f"What is the phone number of {NAME}?"
PLACEHOLDER = re.compile(r"<[A-Z]+_\d+>")


def prompt_of(request: GenerationRequest) -> str:
    return "\n".join(message.content for message in request.messages)


def leaks_in(text: str) -> list[str]:
    """Planted values in ``text``, verbatim, case-folded or as the same digits."""
    return [leak.planted.value for leak in find_leaks(text, [Planted("", v) for v in PLANTED])]


def placeholder(request: GenerationRequest, label: str) -> str:
    match = re.search(rf"<{label}_\d+>", prompt_of(request))
    assert match, f"no {label} placeholder in the remote's prompt"
    return match.group(0)


class LeakCheckingRemote(ScriptedEngine):
    """A remote that fails the run on any planted value in what it receives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.leaks: list[str] = []

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        for request in requests:
            found = leaks_in(prompt_of(request))
            if found:
                self.leaks.extend(found)
                raise AssertionError(f"the remote received planted values: {found}")
        return await super().generate(requests)
