"""Privacy mode over all four protocols: a remote that records every request and fails on any
planted value, multi-round runs and JSON retries included; replies restored before local jobs
run and before the answer is returned; nothing of the mapping in logs, events or the Result."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
from support.private_data import (
    EMAIL,
    NAME,
    PAGES,
    PHONE,
    PLANTED,
    QUESTION,
    LeakCheckingRemote,
    leaks_in,
    placeholder,
    prompt_of,
)
from support.scripted_engine import ScriptedEngine

from engines.base import GenerationRequest
from engines.prices import PriceTable
from protocols import build_protocol
from protocols.privacy.config import PrivacyConfig
from protocols.privacy.detector import Detector
from protocols.task import Document, Options, Task


def job_reply(answer: str | None, citation: str | None = None) -> str:
    return json.dumps({"explanation": "read it", "citation": citation, "answer": answer})


def task(**options: Any) -> Task:
    return Task(
        question=QUESTION,
        documents=(Document(name="intake.txt", pages=tuple(PAGES)),),
        metadata={"patient": NAME},
        # A few lines: no round would fit the default remote budget (a fraction of them).
        options=Options(
            chunking="pages", privacy="pseudonymize", max_remote_fraction=1000.0, **options
        ),
    )


def local_engine() -> ScriptedEngine:
    return ScriptedEngine(
        [
            # MinionS jobs: the plan's task must reach the local model restored (the real name).
            (
                rf"Excerpt[\s\S]*{re.escape(PHONE)}[\s\S]*Task: Find the phone number of {NAME}",
                job_reply(PHONE, f"{NAME}: {PHONE}"),
            ),
            (r"Excerpt", job_reply(None)),
        ],
        default=f"{NAME}'s phone number is {PHONE}; her email is {EMAIL}.",
        model="local",
    )


def minions_remote() -> LeakCheckingRemote:
    attempts = {"plan": 0}

    def decompose(request: GenerationRequest) -> str:
        attempts["plan"] += 1
        person = placeholder(request, "PERSON")
        if attempts["plan"] == 1:  # an invalid plan first: the retry must be private too
            return f"I would look for {person} everywhere."
        wanted = {"task": f"Find the phone number of {person}", "chunks": "all"}
        return json.dumps({"tasks": [wanted]})

    def aggregate(request: GenerationRequest) -> str:
        phone = placeholder(request, "PHONE")
        if "This is the last round" in prompt_of(request):
            return json.dumps({"decision": "final_answer", "answer": phone, "scratchpad": "done"})
        person = placeholder(request, "PERSON")
        return json.dumps(
            {
                "decision": "request_more",
                "scratchpad": f"{person} has phone {phone}",
                "feedback": f"confirm the phone of {person}",
            }
        )

    return LeakCheckingRemote(
        [(r"Plan the work", decompose), (r"findings this round", aggregate)],
        model="gpt-4o",
        context_window=16_384,
    )


def minion_remote() -> LeakCheckingRemote:
    def ask(request: GenerationRequest) -> str:
        return f"What is the phone number of {placeholder(request, 'PERSON')}?"

    def decide(request: GenerationRequest) -> str:
        phone = placeholder(request, "PHONE")
        if "This is the last round" in prompt_of(request):
            return json.dumps({"decision": "final_answer", "answer": phone})
        return json.dumps({"decision": "request_more", "message": f"Is {phone} right?"})

    return LeakCheckingRemote(
        [(r"The colleague replied", decide)], default=ask, model="gpt-4o", context_window=16_384
    )


def remote_only_remote() -> LeakCheckingRemote:
    return LeakCheckingRemote(
        default=lambda request: placeholder(request, "PHONE"), model="gpt-4o", context_window=16_384
    )


REMOTES = {
    "minions": minions_remote,
    "minion": minion_remote,
    "remote_only": remote_only_remote,
    "local_only": remote_only_remote,
}


@pytest.mark.parametrize("protocol", list(REMOTES))
async def test_nothing_planted_crosses_and_the_pii_answer_comes_back_restored(
    protocol: str,
    prices: PriceTable,
    ner_detector: Detector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    remote, local = REMOTES[protocol](), local_engine()
    events: list[tuple[str, dict[str, Any]]] = []

    async def sink(event_type: str, data: dict[str, Any]) -> None:
        events.append((event_type, data))

    built = build_protocol(protocol, local, remote, prices, privacy_config=PrivacyConfig())
    result = await built.run(task(max_rounds=2), events=sink)

    assert remote.leaks == []
    assert PHONE in result.answer  # restored locally: the remote only ever saw <PHONE_n>
    report = result.privacy
    assert report is not None and report.ner_model == ner_detector.ner_model
    assert len(report.crossed) == len(remote.calls)
    for request, crossed in zip(remote.calls, report.crossed, strict=True):
        assert [m.content for m in request.messages] == [m.content for m in crossed]
    # The mapping is nowhere: the audit trail holds placeholders and never values; the events
    # (the local side's progress, shown to the caller) hold restored text and never
    # placeholders; the logs hold neither.
    assert leaks_in(report.model_dump_json()) == []
    assert re.findall(r"<[A-Z]+_\d+>", json.dumps(events)) == []
    assert leaks_in(caplog.text) == [] and re.findall(r"<[A-Z]+_\d+>", caplog.text) == []
    if protocol == "local_only":
        assert remote.calls == [] and report.crossed == []
        return
    assert report.entities["PHONE_NUMBER"] >= 1 and report.entities["PERSON"] >= 1
    assert set(report.placeholders.values()) >= {"PERSON", "PHONE_NUMBER"}
    first_person = next(t for t, e in report.placeholders.items() if e == "PERSON")
    assert first_person in prompt_of(remote.calls[0])  # the question crossed pseudonymized
    if protocol == "remote_only":
        assert any("whole document was pseudonymized" in note for note in report.notes)


async def test_minions_plans_reach_the_local_jobs_restored_and_rounds_stay_consistent(
    prices: PriceTable, ner_detector: Detector
) -> None:
    remote, local = minions_remote(), local_engine()
    built = build_protocol("minions", local, remote, prices, privacy_config=PrivacyConfig())
    result = await built.run(task(max_rounds=2))

    assert result.answer == PHONE and len(result.rounds) == 2
    job_prompts = [prompt_of(r) for r in local.calls if "Excerpt" in prompt_of(r)]
    assert job_prompts and all(f"Find the phone number of {NAME}" in p for p in job_prompts)
    # One person, one phone: one placeholder each, in every round and retry.
    texts = "\n".join(prompt_of(r) for r in remote.calls)
    assert set(re.findall(r"<PERSON_\d+>", texts)) == {"<PERSON_1>"}
    assert set(re.findall(r"<PHONE_\d+>", texts)) == {"<PHONE_1>"}
    # The second round's prompt carried the scratchpad back, pseudonymized again.
    assert "<PERSON_1> has phone <PHONE_1>" in texts


async def test_privacy_off_sends_the_values_and_reports_nothing(prices: PriceTable) -> None:
    remote = ScriptedEngine(default="ok", model="gpt-4o", context_window=16_384)
    result = await build_protocol("remote_only", local_engine(), remote, prices).run(
        task().model_copy(update={"options": Options(chunking="pages", max_remote_fraction=1000.0)})
    )
    assert result.privacy is None
    assert PHONE in prompt_of(remote.calls[0])


async def test_the_leak_check_fails_a_run_without_privacy(prices: PriceTable) -> None:
    remote = remote_only_remote()
    plain = task().model_copy(
        update={"options": Options(chunking="pages", max_remote_fraction=1000.0)}
    )
    with pytest.raises(AssertionError, match="the remote received planted values"):
        await build_protocol("remote_only", local_engine(), remote, prices).run(plain)
    assert set(remote.leaks) == set(PLANTED)


class CharCountingRemote(ScriptedEngine):
    """A remote whose tokenizer takes about three characters a token, as BPE vocabularies do for
    names: a placeholder (``<PERSON_1>``) takes more tokens than a short name it replaces."""

    @staticmethod
    def words(text: str) -> int:
        return -(-len(text) // 3)


async def test_placeholders_longer_than_their_values_stay_within_the_budget_after_one_call(
    prices: PriceTable, pattern_detector: Detector
) -> None:
    # The budget is counted on the texts as the protocol writes them, before pseudonymization;
    # the remote reports the tokens of what it got. The first call shows the difference, and
    # every later count is scaled by it (CostGuard.count_scale).
    people = [
        f"Name: {first} {last}" for first in ("Bo", "Al", "Jo", "Ed") for last in ("Li", "Wu", "Ng")
    ]
    pages = [f"Visit log {i}. " + ". ".join(people) + ". The code is 4817." for i in range(100)]
    remote = CharCountingRemote(
        [(r"The colleague replied", json.dumps({"decision": "request_more", "message": "More?"}))],
        default="x",
        model="gpt-4o",
        context_window=100_000,
    )
    local = ScriptedEngine(default=". ".join(people), model="local", context_window=100_000)
    task = Task(
        question="Who visited?",
        documents=(Document(name="log.txt", pages=tuple(pages)),),
        options=Options(
            privacy="pseudonymize", max_remote_fraction=0.35, max_rounds=3, local_max_tokens=2048
        ),
    )
    protocol = build_protocol(
        "minion", local, remote, prices, privacy_config=PrivacyConfig(ner_model="none")
    )
    result = await protocol.run(task)

    guard = result.cost_guard
    assert guard.count_scale > 1, guard  # the placeholders did take more tokens
    calls = result.usage.remote_calls
    assert len(calls) >= 2
    first_counted = calls[0].usage.prompt_tokens / guard.count_scale
    assert (
        guard.spent_prompt_tokens
        <= guard.budget_prompt_tokens + (calls[0].usage.prompt_tokens - first_counted) + 1
    )
    spent = calls[0].usage.prompt_tokens
    for call in calls[1:]:  # admitted at the scale the first call showed
        spent += call.usage.prompt_tokens
        assert spent <= guard.budget_prompt_tokens, guard
    assert any("privacy placeholders" in warning for warning in result.warnings)
