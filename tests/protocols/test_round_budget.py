"""A MinionS round's local work is bounded by the operator's budget (jobs or local tokens), and
when the plan asks for more, each task keeps the chunks most relevant to it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from support.scripted_engine import ScriptedEngine

from engines.prices import PriceTable
from protocols import MinionS
from protocols.task import Task

FINAL = json.dumps({"decision": "final_answer", "answer": "done", "scratchpad": ""})
NO_ANSWER = json.dumps({"explanation": "", "citation": None, "answer": None})
FILLER = [f"Page {i}: the weather was mild and lunch was served at noon." for i in range(12)]


def pages() -> list[str]:
    text = list(FILLER)
    text[3] = "Page 3: the warehouse access code is 4817, kept by the warehouse manager."
    text[9] = "Page 9: the harbour pilot boards ships at the harbour mouth at dawn."
    return text


def plan(*tasks: dict[str, object]) -> str:
    return json.dumps({"tasks": list(tasks)})


def job_chunks(local: ScriptedEngine) -> list[tuple[str, int]]:
    """(task, chunk id) of every job the local model ran."""
    found = []
    for call in local.calls:
        prompt = "\n".join(m.content for m in call.messages)
        task = re.search(r"Task: (.*)", prompt)
        chunk = re.search(r"chunk (\d+)", prompt)
        assert task and chunk
        found.append((task.group(1).strip(), int(chunk.group(1))))
    return found


async def test_over_the_job_budget_each_task_keeps_its_most_relevant_chunks(
    pages_task: Callable[..., Task],
    remote_engine: Callable[..., ScriptedEngine],
    prices: PriceTable,
) -> None:
    remote = remote_engine(
        decompose=plan(
            {"task": "Find the warehouse access code", "chunks": "all"},
            {"task": "When does the harbour pilot board ships?", "chunks": "all"},
        ),
        aggregate=FINAL,
    )
    local = ScriptedEngine(
        default=json.dumps({"explanation": "", "citation": None, "answer": None})
    )
    result = await MinionS(local, remote, prices, max_jobs_per_round=2).run(pages_task(pages()))

    jobs = result.rounds[0].jobs
    assert jobs is not None and (jobs.planned, jobs.run, jobs.skipped) == (24, 2, 22)
    assert sorted(job_chunks(local)) == [
        ("Find the warehouse access code", 3),
        ("When does the harbour pilot board ships?", 9),
    ]
    assert any("most relevant" in warning for warning in result.warnings)


async def test_a_local_token_budget_bounds_the_round(
    pages_task: Callable[..., Task],
    remote_engine: Callable[..., ScriptedEngine],
    prices: PriceTable,
) -> None:
    remote = remote_engine(
        decompose=plan({"task": "Find the warehouse access code", "chunks": "all"}),
        aggregate=FINAL,
    )
    local = ScriptedEngine(
        default=json.dumps({"explanation": "", "citation": None, "answer": None})
    )
    # Each job is a prompt of well under 200 words (the scripted tokens) plus 64 reply tokens.
    protocol = MinionS(local, remote, prices, job_max_tokens=64, max_local_tokens_per_round=500)
    result = await protocol.run(pages_task(pages()))

    jobs = result.rounds[0].jobs
    assert jobs is not None and 1 <= jobs.run < 12 and jobs.skipped == 12 - jobs.run
    spent = sum(call.usage.prompt_tokens for call in result.usage.local_calls)
    assert spent + 64 * jobs.run <= 500
    assert ("Find the warehouse access code", 3) in job_chunks(local)  # the best chunk is in
    assert any("max_local_tokens_per_round (500)" in warning for warning in result.warnings)
