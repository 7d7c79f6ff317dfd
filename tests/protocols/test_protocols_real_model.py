"""Every protocol end to end on the real bundled model (vLLM, SmolLM2-135M), the local model also
standing in for the remote. Kept cheap: one round, short replies, a 20-page document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from engines.prices import PriceTable
from protocols import Result, Task, build_protocol
from protocols.synthetic import make_document

pytestmark = pytest.mark.model

# Short replies and no JSON retries: on a shared 2-core CPU the model decodes ~5-10 tokens/s.
OPTIONS: dict[str, Any] = {
    "max_rounds": 1,
    "max_tasks_per_round": 1,
    "remote_max_tokens": 96,
    "local_max_tokens": 48,
    "job_max_tokens": 128,
    "json_retries": 0,
}


@pytest.fixture(scope="module")
def task() -> Task:
    synthetic = make_document(20, words_per_page=150, seed=0)
    return Task(question=synthetic.question, documents=(synthetic.document,))


@pytest.fixture(scope="module")
def run_protocol(local_engine: Any, task: Task) -> Callable[[str], Awaitable[Result]]:
    results: dict[str, Result] = {}

    async def run(name: str) -> Result:
        if name not in results:
            protocol = build_protocol(
                name, local_engine, local_engine, PriceTable.default(), **OPTIONS
            )
            results[name] = await protocol.run(task)
        return results[name]

    return run


@pytest.mark.parametrize("name", ["minions", "minion", "local_only", "remote_only"])
async def test_protocol_runs_end_to_end(
    run_protocol: Callable[[str], Awaitable[Result]], name: str
) -> None:
    result = await run_protocol(name)
    assert result.protocol == name and result.remote_stand_in
    assert result.answer.strip()
    assert result.cost_usd.total == 0  # the stand-in remote is the free local model
    if name == "remote_only":
        # By design the baseline never calls the local side; its work is all "remote".
        assert result.usage.local.total_tokens == 0 and result.usage.remote.prompt_tokens > 0
    else:
        assert result.usage.local.prompt_tokens > 0 and result.usage.local.completion_tokens > 0
    if name == "minions":
        round_ = result.rounds[0]
        assert round_.jobs is not None and round_.jobs.run > 0
        assert round_.jobs.run == round_.jobs.kept + sum(round_.jobs.dropped.values())
        assert result.stats.chunks >= 3


async def test_minions_sends_far_fewer_remote_tokens_than_remote_only(
    run_protocol: Callable[[str], Awaitable[Result]],
) -> None:
    minions = await run_protocol("minions")
    remote_only = await run_protocol("remote_only")
    ratio = minions.usage.remote.prompt_tokens / remote_only.usage.remote.prompt_tokens
    assert ratio < 0.5, (minions.usage.remote.prompt_tokens, remote_only.usage.remote.prompt_tokens)


@pytest.mark.parametrize("name", ["minions", "minion"])
async def test_the_remote_budget_holds_on_the_real_model(
    run_protocol: Callable[[str], Awaitable[Result]], name: str
) -> None:
    # The default budget: half of what remote_only sends, counted with the model's own chat
    # template (the stand-in remote is the bundled model, so counted and reported agree).
    result = await run_protocol(name)
    guard, baseline = result.cost_guard, result.baseline
    assert guard.budget_prompt_tokens == int(0.5 * baseline.remote_prompt_tokens)
    sent = result.usage.remote.prompt_tokens
    assert 0 < sent == guard.spent_prompt_tokens <= guard.budget_prompt_tokens
    remote_only = await run_protocol("remote_only")
    assert baseline.remote_prompt_tokens == remote_only.usage.remote.prompt_tokens
