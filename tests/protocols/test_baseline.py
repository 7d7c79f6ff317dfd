"""``Result.baseline``: what remote_only would have sent, counted before the first remote call,
the same number on every protocol's Result."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from support.scripted_engine import ScriptedEngine

from engines.prices import PriceTable
from protocols import ContextOverflowError, build_protocol
from protocols.base import remote_only_prompt
from protocols.task import Document, Task

PAGES = ["The weather was mild.", "The access code is 4817.", "Lunch was at noon."]
PLAN = json.dumps({"tasks": [{"task": "Find the access code", "chunks": "all"}]})
FINAL = json.dumps({"decision": "final_answer", "answer": "4817", "scratchpad": "s"})
JOB = json.dumps({"explanation": "e", "citation": "code is 4817", "answer": "4817"})


def engines(context_window: int = 16_384) -> tuple[ScriptedEngine, ScriptedEngine]:
    local = ScriptedEngine([(r"4817", JOB)], default=json.dumps({"answer": None}))
    remote = ScriptedEngine(
        [
            (r"Plan the work", PLAN),
            (r"findings this round", FINAL),
            (r"The colleague replied", json.dumps({"decision": "final_answer", "answer": "4817"})),
        ],
        default="4817",
        model="gpt-4o",
        context_window=context_window,
    )
    return local, remote


@pytest.mark.parametrize("name", ["remote_only", "minions", "minion", "local_only"])
async def test_every_protocol_reports_what_remote_only_really_sends(
    name: str, pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    task = pages_task(PAGES)
    local, remote = engines()
    reference = await build_protocol("remote_only", local, remote, prices).run(task)
    result = await build_protocol(name, *engines(), prices).run(task)

    sent = reference.usage.remote.prompt_tokens
    assert result.baseline.remote_prompt_tokens == sent > 0
    assert result.baseline.exceeds_context is False
    assert result.baseline.usd == pytest.approx(sent * 2.5 / 1e6)  # gpt-4o input price
    assert result.cost_guard.baseline_prompt_tokens == sent
    if name == "local_only":  # nothing paid: no factor
        assert result.baseline.savings_factor is None
    else:
        expected = result.baseline.usd / result.cost_usd.total
        assert result.baseline.savings_factor == pytest.approx(expected, rel=1e-3)


async def test_the_baseline_is_known_before_the_first_remote_call(
    pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    async def sink(kind: str, data: dict[str, Any]) -> None:
        events.append((kind, data))

    task = pages_task(PAGES, max_remote_fraction=40.0)  # a round fits 40 x these 3 lines
    local, remote = engines()
    await build_protocol("minions", local, remote, prices).run(task, events=sink)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "baseline" and "remote_call" in kinds
    baseline = events[0][1]
    assert baseline["remote_prompt_tokens"] == remote.count_tokens(remote_only_prompt(task))
    assert baseline["budget_prompt_tokens"] == int(40 * baseline["remote_prompt_tokens"])


async def test_a_document_over_the_remote_context_is_flagged_and_still_counted(
    prices: PriceTable,
) -> None:
    text = " ".join(f"word{i}" for i in range(3000)) + " The access code is 4817."
    task = Task(question="What is the code?", documents=(Document(text=text),))
    local, remote = engines(context_window=2048)
    with pytest.raises(ContextOverflowError, match="documents: too long"):
        await build_protocol("remote_only", local, remote, prices).run(task)

    result = await build_protocol("local_only", *engines(context_window=2048), prices).run(task)
    assert result.baseline.exceeds_context is True
    assert result.baseline.remote_prompt_tokens == remote.count_tokens(remote_only_prompt(task))
    assert result.baseline.remote_prompt_tokens > 3000


async def test_an_unpriced_or_stand_in_remote_has_no_savings_factor(
    pages_task: Callable[..., Task],
) -> None:
    local, remote = engines()
    unpriced = PriceTable.model_validate({"models": {}})
    result = await build_protocol("minions", local, remote, unpriced).run(pages_task(PAGES))
    assert result.baseline.usd == 0 and result.baseline.savings_factor is None

    stand_in = await build_protocol("minions", remote, remote, PriceTable.default()).run(
        pages_task(PAGES)
    )
    assert stand_in.remote_stand_in and stand_in.baseline.savings_factor is None
    assert stand_in.baseline.remote_prompt_tokens > 0
