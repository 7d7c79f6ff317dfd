"""What a protocol run's estimate scores: its compressions, their source chunks, the caps, the
reference set (analysis/task_mi.py), with scripted engines (support.mi_engines)."""

from __future__ import annotations

import math

import pytest
from support.mi_engines import ScoringLocal, planted_term, remote_planner

from analysis.engine_scorer import EngineScorer
from analysis.task_mi import (
    MILimits,
    MISkipped,
    RollingReferences,
    clip_context,
    contexts_to_share,
    score_task_mi,
    task_mi_inputs,
)
from engines.prices import PriceTable
from protocols import Document, Options, Result, Task, build_protocol

PAGES = ("The alpha code is 1111.", "The bravo code is 2222.", "Lunch is at noon.")


def task_of(*pages: str) -> Task:
    return Task(
        question="What are the codes?",
        documents=(Document(text="\f".join(pages), name="codes.txt"),),
        options=Options(chunking="pages", max_remote_fraction=1000.0),  # short: lift the budget
    )


async def run(protocol: str, task: Task) -> tuple[Result, ScoringLocal]:
    local = ScoringLocal(model="local", context_window=100_000)
    built = build_protocol(protocol, local, remote_planner(), PriceTable.default())
    return await built.run(task), local


async def test_minions_compressions_are_linked_to_their_chunks_with_their_job_query() -> None:
    task = task_of(*PAGES)
    result, local = await run("minions", task)
    inputs = task_mi_inputs(result, task, local.count_tokens, MILimits())
    assert inputs.contexts == list(PAGES)  # sources first (chunks 0, 1), then the other chunk
    assert [(c.context, c.text, c.query) for c in inputs.compressions] == [
        (0, "answer: 1111.", "Find the value"),
        (1, "answer: 2222.", "Find the value"),
    ]
    score = await score_task_mi(EngineScorer(local), inputs, [], MILimits())
    assert score.estimate.n_contexts == 3 and score.reference_contexts == 0
    assert score.estimate.mi_nats == pytest.approx(planted_term(3), abs=1e-9)
    assert all(term.nats <= math.log(3) for term in score.estimate.terms)


async def test_caps_keep_sources_first_and_identical_chunks_are_one_context() -> None:
    task = task_of(*PAGES)
    result, local = await run("minions", task)
    capped = task_mi_inputs(result, task, local.count_tokens, MILimits(max_compressions=1))
    assert len(capped.compressions) == 1 and capped.compressions[0].context == 0
    two = task_mi_inputs(result, task, local.count_tokens, MILimits(max_contexts=2))
    assert two.contexts == list(PAGES[:2]) and len(two.compressions) == 2
    one = task_mi_inputs(result, task, local.count_tokens, MILimits(max_contexts=1))
    assert one.contexts == [PAGES[0]] and len(one.compressions) == 1  # chunk 1 found no room
    twice = task_of(PAGES[0], PAGES[0], PAGES[2])
    result, local = await run("minions", twice)
    inputs = task_mi_inputs(result, twice, local.count_tokens, MILimits())
    assert inputs.contexts == [PAGES[0], PAGES[2]]
    assert [c.context for c in inputs.compressions] == [0, 0]


async def test_outputs_that_never_crossed_are_not_scored() -> None:
    task = task_of(*PAGES)
    result, local = await run("minions", task)
    # As if the findings had been left out to fit the remote's window.
    rounds = [record.model_copy(update={"crossed": []}) for record in result.rounds]
    cut = result.model_copy(update={"rounds": rounds})
    with pytest.raises(MISkipped, match="no local output crossed"):
        task_mi_inputs(cut, task, local.count_tokens, MILimits())
    empty = task_of("Nothing here.", "Lunch is at noon.")
    result, local = await run("minions", empty)
    with pytest.raises(MISkipped, match="no local output crossed"):
        task_mi_inputs(result, empty, local.count_tokens, MILimits())


async def test_rebuilt_chunks_must_match_the_run_and_baselines_are_refused() -> None:
    task = task_of(*PAGES)
    result, local = await run("minions", task)
    other = task_of(*PAGES, "One more page.")
    with pytest.raises(ValueError, match="rebuilt 4 chunks but the run had 3"):
        task_mi_inputs(result, other, local.count_tokens, MILimits())
    baseline, _ = await run("remote_only", task)
    with pytest.raises(ValueError, match="sends no compressions"):
        task_mi_inputs(baseline, task, local.count_tokens, MILimits())


async def test_unchunked_minion_scores_its_reply_against_the_whole_documents() -> None:
    task = task_of(*PAGES)
    result, local = await run("minion", task)
    assert result.stats.chunks == 0
    inputs = task_mi_inputs(result, task, local.count_tokens, MILimits())
    assert inputs.contexts == [task.documents[0].text]
    # Minion asked the local model the user's question itself (the remote did not open).
    assert [(c.text, c.query) for c in inputs.compressions] == [("1111.", task.question)]
    with pytest.raises(MISkipped, match="fewer than 2 contexts"):
        await score_task_mi(EngineScorer(local), inputs, [], MILimits())
    # References: one duplicate of the task's own context and one blank are left out; capped.
    references = [task.documents[0].text, "  ", "Other text.", "More text.", "Last text."]
    score = await score_task_mi(EngineScorer(local), inputs, references, MILimits(reference_size=2))
    assert (score.task_contexts, score.reference_contexts) == (1, 2)
    assert score.estimate.mi_nats == pytest.approx(planted_term(3), abs=1e-9)
    assert score.estimate.reference_set_id == "rolling:2"


def test_rolling_references_share_a_quarter_newest_first_and_cap() -> None:
    assert contexts_to_share([f"c{i}" for i in range(8)], 16) == ["c0", "c2", "c4", "c6"]
    assert contexts_to_share(["a", "b"], 2) == ["a"]
    assert contexts_to_share(["a"], 0) == []
    rolling = RollingReferences(3)
    rolling.push(["a", "b"])
    rolling.push(["c", "d"])
    rolling.push(["e"])
    rolling.push(["f"])
    assert rolling.recent() == ["f", "e", "c"]


def test_long_contexts_keep_their_ends_and_limits_are_checked() -> None:
    text = "A" * 10 + "m" * 100 + "Z" * 10
    assert clip_context(text, 20) == "A" * 10 + "Z" * 10
    assert clip_context("short", 20) == "short"
    with pytest.raises(ValueError, match="max_contexts"):
        MILimits(max_contexts=0)
