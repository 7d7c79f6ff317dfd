"""Each protocol's stated worst case (``max_remote_calls``) against the remote calls it makes.

The budget reserves ``max_remote_calls`` worst-case calls before a task runs, so a protocol that
made one call more would spend money nobody reserved. Each test drives a protocol into its worst
case (every JSON reply retried, every round used) and checks the bound is met exactly there.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from support.scripted_engine import ScriptedEngine

from engines.base import GenerationRequest
from engines.prices import PriceTable
from protocols import PROTOCOLS, build_protocol
from protocols.task import Document, Options, Task

PAGES = ("The access code is 4817.", "Lunch is served at noon.", "The office is in Oslo.")


def task_of(**options: object) -> Task:
    return Task(
        question="What is the access code?",
        documents=(Document(name="doc.txt", pages=PAGES),),
        # Three short lines: no round would fit the default remote budget (a fraction of them).
        options=Options(chunking="pages", max_remote_fraction=1000.0, **options),  # type: ignore[arg-type]
    )


def valid_after(retries: int, valid: Callable[[GenerationRequest], str]) -> Callable[..., str]:
    """A remote reply that is invalid JSON ``retries`` times, then valid: each call then costs
    every attempt the protocol allows."""
    calls = 0

    def reply(request: GenerationRequest) -> str:
        nonlocal calls
        calls += 1
        return valid(request) if calls % (retries + 1) == 0 else "not json at all"

    return reply


def chat_decision(request: GenerationRequest) -> str:
    # The round's decide prompt (a retry appends a correction turn after it).
    notes = [
        m.content
        for m in request.messages
        if "Answer if you can" in m.content or "last round" in m.content
    ]
    if "last round" in notes[-1]:
        return json.dumps({"decision": "final_answer", "answer": "4817"})
    return json.dumps({"decision": "request_more", "message": "Look again for the code."})


def remote_calls(remote: ScriptedEngine) -> int:
    return len(remote.calls)


@pytest.mark.parametrize("retries", [0, 2])
@pytest.mark.parametrize("rounds", [1, 3])
async def test_minions_reaches_its_bound_when_every_reply_is_invalid(
    retries: int, rounds: int
) -> None:
    remote = ScriptedEngine(default="not json at all", model="gpt-4o", context_window=16_384)
    local = ScriptedEngine(
        default=json.dumps({"answer": "4817", "explanation": "", "citation": None})
    )
    options = Options(max_rounds=rounds, json_retries=retries)
    protocol = build_protocol("minions", local, remote, PriceTable.default())
    await protocol.run(task_of(max_rounds=rounds, json_retries=retries))
    assert remote_calls(remote) == PROTOCOLS["minions"].max_remote_calls(options)


@pytest.mark.parametrize("remote_opens", [False, True])
@pytest.mark.parametrize("retries", [0, 2])
@pytest.mark.parametrize("rounds", [1, 3])
async def test_minion_reaches_its_bound_when_every_decision_is_retried(
    retries: int, rounds: int, remote_opens: bool
) -> None:
    remote = ScriptedEngine(
        [("give the final answer now|Answer if you can", valid_after(retries, chat_decision))],
        default="What is the access code?",
        model="gpt-4o",
        context_window=16_384,
    )
    local = ScriptedEngine(default="The code is 4817.")
    options = Options(max_rounds=rounds, json_retries=retries, remote_opens=remote_opens)
    protocol = build_protocol("minion", local, remote, PriceTable.default())
    result = await protocol.run(
        task_of(max_rounds=rounds, json_retries=retries, remote_opens=remote_opens)
    )
    assert result.answer == "4817"
    assert remote_calls(remote) == PROTOCOLS["minion"].max_remote_calls(options)


@pytest.mark.parametrize(("name", "calls"), [("remote_only", 1), ("local_only", 0)])
async def test_baselines_make_exactly_their_stated_calls(name: str, calls: int) -> None:
    remote = ScriptedEngine(default="4817", model="gpt-4o", context_window=16_384)
    local = ScriptedEngine(default="4817")
    await build_protocol(name, local, remote, PriceTable.default()).run(task_of())
    assert remote_calls(remote) == calls == PROTOCOLS[name].max_remote_calls(Options())


def test_every_protocol_states_a_bound() -> None:
    for cls in PROTOCOLS.values():
        assert cls.max_remote_calls(Options()) >= 0
