"""Minion with scripted engines: the chat flow, round limits, and local chunking."""

from __future__ import annotations

import json
from collections.abc import Callable

from support.scripted_engine import ScriptedEngine

from engines.base import GenerationRequest
from engines.prices import PriceTable
from engines.usage import Usage
from protocols import Minion
from protocols.plans import FinalChatDecision
from protocols.task import Task

PAGES = [
    "SECRETFILLER the weather was mild in spring.",
    "The access code for the north warehouse is 4817.",
    "Lunch was served at noon.",
]
FINAL = json.dumps({"decision": "final_answer", "answer": "4817"})
MORE = json.dumps({"decision": "request_more", "message": "Are you sure? Quote it."})


def prompt_of(request: GenerationRequest) -> str:
    return "\n".join(message.content for message in request.messages)


def remote_engine(decide: object = FINAL, **kwargs: object) -> ScriptedEngine:
    return ScriptedEngine(
        [(r"The colleague replied", decide)],
        default="What is the access code? Quote the sentence.",
        model="gpt-4o",
        **kwargs,
    )


def local_engine(**kwargs: object) -> ScriptedEngine:
    return ScriptedEngine(
        [(r"Excerpt.*4817", "The code is 4817."), (r"Excerpt", "NONE")],
        default="The access code is 4817 (page 2).",
        model="local",
        **kwargs,
    )


async def test_one_round_chat(pages_task: Callable[..., Task], prices: PriceTable) -> None:
    remote, local = remote_engine(), local_engine()
    task = pages_task(PAGES)
    result = await Minion(local, remote, prices).run(task)

    assert result.answer == "4817" and result.protocol == "minion"
    # The colleague is asked the user's question first: the remote's one call is its decision.
    assert [c.purpose for c in result.usage.remote_calls] == ["decide"]
    assert len(result.rounds) == 1 and result.rounds[0].decision == "final_answer"
    # The local model got the documents and the question; the remote got no document.
    (local_call,) = local.calls
    assert "SECRETFILLER" in prompt_of(local_call) and task.question in prompt_of(local_call)
    assert all("SECRETFILLER" not in prompt_of(c) for c in remote.calls)
    assert result.compressions == ["The access code is 4817 (page 2)."]
    (decide,) = remote.calls
    assert "4817 (page 2)" in prompt_of(decide) and task.question in prompt_of(decide)
    # The decision is one structured-output request, with one user turn (no two in a row).
    assert decide.json_schema is not None
    assert [m.role for m in decide.messages] == ["system", "user"]
    # The user's question is not recorded as something the remote wrote.
    assert [m.purpose for m in result.rounds[0].remote_messages] == ["decide"]


async def test_the_remote_may_open_the_chat(
    pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    remote, local = remote_engine(), local_engine()
    result = await Minion(local, remote, prices, remote_opens=True).run(pages_task(PAGES))

    assert result.answer == "4817"
    assert [c.purpose for c in result.usage.remote_calls] == ["chat", "decide"]
    (local_call,) = local.calls
    assert "What is the access code? Quote the sentence." in prompt_of(local_call)
    assert "4817 (page 2)" in prompt_of(remote.calls[1])
    assert remote.calls[1].json_schema is not None and remote.calls[0].json_schema is None
    assert [m.role for m in remote.calls[1].messages] == ["system", "user", "assistant", "user"]
    assert [m.purpose for m in result.rounds[0].remote_messages] == ["chat", "decide"]


async def test_request_more_continues_the_chat_until_the_last_round(
    pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    def decide(request: GenerationRequest) -> str:
        return FINAL if "This is the last round" in prompt_of(request) else MORE

    remote, local = remote_engine(decide), local_engine()
    result = await Minion(local, remote, prices, max_rounds=3).run(pages_task(PAGES))

    assert len(result.rounds) == 3
    assert [c.purpose for c in result.usage.remote_calls] == ["decide", "decide", "decide"]
    assert [r.decision for r in result.rounds] == ["request_more", "request_more", "final_answer"]
    assert "Are you sure? Quote it." in prompt_of(local.calls[1])
    assert remote.calls[-1].json_schema == FinalChatDecision.model_json_schema()
    # The remote keeps the whole conversation: its last prompt holds every local reply.
    assert prompt_of(remote.calls[-1]).count("The colleague replied") == 3


async def test_an_invalid_decision_becomes_the_answer_with_a_warning(
    pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    remote = remote_engine("I am fairly sure it is 4817.")
    result = await Minion(local_engine(), remote, prices).run(pages_task(PAGES))
    assert result.answer == "I am fairly sure it is 4817."
    assert len(result.usage.remote_calls) == 4  # the decision and its 3 retries
    assert any("decision was invalid" in w for w in result.warnings)


async def test_long_documents_are_answered_chunk_by_chunk(
    pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    pages = [f"Routine page {i} with nothing. " * 20 for i in range(12)]
    pages[5] = "The access code for the north warehouse is 4817."
    remote = remote_engine()
    local = local_engine(context_window=1200)
    result = await Minion(local, remote, prices, local_max_tokens=64).run(pages_task(pages))

    assert local.batches == [12]  # one batch, one request per chunk
    assert result.compressions == ["[doc.txt, chunk 5, page 6] The code is 4817."]
    assert [o.chunk_id for o in result.rounds[0].local_outputs] == [5]
    assert result.stats.chunks == 12


async def test_minion_usage_totals_are_the_sums(
    pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    def decide(request: GenerationRequest) -> str:
        return FINAL if "This is the last round" in prompt_of(request) else MORE

    remote, local = remote_engine(decide), local_engine()
    result = await Minion(local, remote, prices, max_rounds=2).run(pages_task(PAGES))
    remote_prompt = sum(ScriptedEngine.words(prompt_of(c)) for c in remote.calls)
    assert result.usage.remote.prompt_tokens == remote_prompt
    assert Usage.sum([c.usage.as_usage() for c in result.usage.remote_calls]) == (
        result.usage.remote.as_usage()
    )
    assert result.usage.local_requests == 2


async def test_chunk_answers_longer_than_one_reply_are_combined_locally(
    pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    # Every chunk answers (a small model rarely says NONE): together they are far longer than
    # one local reply may be, so the local model merges them before anything crosses.
    pages = [f"Routine page {i} with nothing. " * 20 for i in range(12)]
    pages[5] = "The access code for the north warehouse is 4817."
    local = ScriptedEngine(
        [
            (r"Notes you took", "Merged: the code is 4817 (chunk 5)."),
            (r"Excerpt.*4817", "The code is 4817."),
            (r"Excerpt", "This part talks about routine matters at some length."),
        ],
        model="local",
        context_window=1200,
    )
    remote = remote_engine()
    result = await Minion(local, remote, prices, local_max_tokens=64).run(pages_task(pages))

    assert local.batches == [12, 1]  # the chunk answers, then one combine call
    combine_prompt = prompt_of(local.calls[-1])
    assert "The code is 4817." in combine_prompt and "routine matters" in combine_prompt
    assert result.compressions == ["Merged: the code is 4817 (chunk 5)."]
    decide_prompt = prompt_of(remote.calls[0])
    assert "Merged: the code is 4817" in decide_prompt and "routine matters" not in decide_prompt
    assert [c.purpose for c in result.usage.local_calls] == ["chat", "combine"]
    # Chunk answers are kept per chunk; the merged reply belongs to the whole documents.
    outputs = result.rounds[0].local_outputs
    assert [o.chunk_id for o in outputs] == [*range(12), None]
