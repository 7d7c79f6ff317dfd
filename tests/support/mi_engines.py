"""Scripted engines whose mutual-information estimates can be computed by hand.

The local reader answers with the planted value exactly as the document writes it ("4817.",
with its period), so under ``ScriptedEngine.score`` (−0.1 per word found in the prefix, −5.0
per other word) a compression is one word likelier under its own context than under any other:

* minions: the finding "answer: 4817." scores −5.1 under its chunk and −10.0 elsewhere;
* minion: the reply "4817." scores −0.1 under its documents and −5.0 elsewhere.

Either way own − other = 4.9 nats, so each term is ``planted_term(N)``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Sequence

from engines.base import GenerationRequest
from engines.errors import EngineError
from support.scripted_engine import ScriptedEngine

_FACT = re.compile(r" is (\d{4})\.")
PLAN = json.dumps({"tasks": [{"task": "Find the value", "advice": "", "chunks": "all"}]})
OPENING = "What is the value?"
GAP_NATS = 4.9


def planted_term(n_contexts: int) -> float:
    """One compression's term when its own context beats each of the N − 1 others by 4.9 nats."""
    return math.log(n_contexts) - math.log1p((n_contexts - 1) * math.exp(-GAP_NATS))


def _prompt(request: GenerationRequest) -> str:
    return "\n".join(message.content for message in request.messages)


def local_reader(request: GenerationRequest) -> str:
    found = _FACT.search(_prompt(request))
    value = f"{found.group(1)}." if found else None
    if request.json_schema is not None:
        return json.dumps({"explanation": "", "citation": None, "answer": value})
    return value or "NONE"


def _digits(request: GenerationRequest, marker: str) -> str:
    prompt = _prompt(request)
    found = re.search(rf"{marker}\D*(\d{{4}})", prompt)
    return found.group(1) if found else "unknown"


def _aggregate(request: GenerationRequest) -> str:
    answer = _digits(request, "answer:")
    return json.dumps({"decision": "final_answer", "answer": answer, "scratchpad": "done"})


def _decide(request: GenerationRequest) -> str:
    return json.dumps({"decision": "final_answer", "answer": _digits(request, "<reply>")})


def remote_planner(model: str = "gpt-4o") -> ScriptedEngine:
    return ScriptedEngine(
        [
            (r"Plan the work", PLAN),
            (r"findings this round", _aggregate),
            (r"The colleague replied", _decide),
            (r"Read the documents below", lambda r: _digits(r, " is")),
        ],
        default=OPENING,
        model=model,
        context_window=100_000,
    )


class ScoringLocal(ScriptedEngine):
    """The local reader; ``score`` can be held until released, made to fail, or switched off."""

    def __init__(self, *, hold: bool = False, fail: bool = False, **kwargs: object) -> None:
        super().__init__(default=local_reader, **kwargs)  # type: ignore[arg-type]
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.fail = fail
        self.score_calls = 0

    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        self.score_calls += 1
        await self.release.wait()
        if self.fail:
            raise EngineError("scripted scoring failure")
        return await super().score(prefix, continuations)


class NoScoreLocal(ScriptedEngine):
    supports_score = False
