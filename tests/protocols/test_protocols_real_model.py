"""Every protocol end to end on the real bundled model (vLLM, SmolLM2-135M), the local model also
standing in for the remote. Kept cheap: one round, short replies, a 20-page document."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from engines.prices import PriceTable
from protocols import Document, Result, Task, build_protocol
from protocols.real_text import python_reference
from protocols.synthetic import make_document

pytestmark = pytest.mark.model
logger = logging.getLogger(__name__)

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


# The property of issue 20 on the real model: whatever the bundled model writes as the remote
# (it rarely writes valid JSON, and fills every reply it is allowed), over protocols, options and
# documents, the remote never gets more than max_remote_fraction x the baseline. A few examples:
# each is a real run on the CPU.
examples: list[tuple[object, ...]] = []  # what ran, for -s and the assertion below
REAL_DOCUMENTS = {
    "short": Document(name="note.txt", text="The access code for the north warehouse is 4817."),
    "synthetic": make_document(6, words_per_page=150, seed=3).document,
    "real_text": python_reference().document,
}


@settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.generate],
)
@given(
    name=st.sampled_from(["minions", "minion"]),
    document=st.sampled_from(sorted(REAL_DOCUMENTS)),
    fraction=st.sampled_from([0.1, 0.3, 0.5]),
    max_rounds=st.integers(1, 2),
    retries=st.integers(0, 1),
    remote_opens=st.booleans(),
)
# The cases that matter most, always run: both protocols over the ~6k-token real text.
@example(
    name="minions", document="real_text", fraction=0.5, max_rounds=2, retries=1, remote_opens=False
)
@example(
    name="minion", document="real_text", fraction=0.1, max_rounds=2, retries=1, remote_opens=True
)
async def test_the_remote_budget_holds_on_the_real_model_over_options_and_documents(
    local_engine: Any,
    name: str,
    document: str,
    fraction: float,
    max_rounds: int,
    retries: int,
    remote_opens: bool,
) -> None:
    options = {
        **OPTIONS,
        "max_tasks_per_round": 2,
        "max_remote_fraction": fraction,
        "max_rounds": max_rounds,
        "json_retries": retries,
        "remote_opens": remote_opens,
    }
    task = Task(question="What is the access code?", documents=(REAL_DOCUMENTS[document],))
    protocol = build_protocol(name, local_engine, local_engine, PriceTable.default(), **options)
    result = await protocol.run(task)

    guard = result.cost_guard
    assert guard.budget_prompt_tokens == int(fraction * result.baseline.remote_prompt_tokens)
    sent = result.usage.remote.prompt_tokens
    assert sent == guard.spent_prompt_tokens <= guard.budget_prompt_tokens, guard
    assert guard.count_scale == 1.0  # the stand-in remote counts as it reports
    assert result.error is None and result.answer.strip()
    examples.append((name, document, fraction, sent, [f.kind for f in guard.fallbacks]))


def test_the_real_model_examples_sent_something_to_the_remote() -> None:
    # Not every example may fall back: the property must have been tested on real remote calls.
    if not examples:
        pytest.skip("the property test did not run in this session")
    logger.info("remote budget examples: %s", examples)
    assert any(sent > 0 for _name, _doc, _fraction, sent, _fallbacks in examples), examples
