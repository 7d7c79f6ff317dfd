"""A failing local model: one failed request fails only its job (timeouts counted apart), and a
Minion whose local model fails ends with a failed Result that keeps what it spent."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from support.scripted_engine import ScriptedEngine

from engines.base import GenerationRequest, GenerationResult, gather_settled
from engines.errors import EngineError, EngineTimeoutError
from engines.prices import PriceTable
from protocols import Minion, MinionS
from protocols.task import Task

PAGES = [
    "The weather was mild in spring.",
    "The access code for the north warehouse is 4817.",
    "Lunch was served at noon.",
    "The stall was painted red.",
]
FINAL = json.dumps({"decision": "final_answer", "answer": "4817", "scratchpad": "found it"})


def job_reply(answer: str | None) -> str:
    return json.dumps({"explanation": "read it", "citation": None, "answer": answer})


class PerRequestEngine(ScriptedEngine):
    """A scripted local model that answers each request on its own, like a local server: a
    request naming ``timeout_on`` times out, one naming ``fail_on`` fails, alone."""

    isolates_failures = True

    def __init__(self, *, timeout_on: str, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.timeout_on = timeout_on

    async def generate_settled(
        self, requests: Sequence[GenerationRequest]
    ) -> list[GenerationResult | EngineError | ValueError]:
        async def one(request: GenerationRequest) -> GenerationResult:
            if any(self.timeout_on in m.content for m in request.messages):
                raise EngineTimeoutError("local: http://x stalled: nothing for 5 s")
            return (await self.generate([request]))[0]

        return await gather_settled([one(r) for r in requests])


async def test_one_failed_job_fails_alone_and_timeouts_are_counted_apart(
    pages_task: Callable[..., Task],
    remote_engine: Callable[..., ScriptedEngine],
    prices: PriceTable,
) -> None:
    remote = remote_engine(
        decompose=json.dumps({"tasks": [{"task": "Find the code", "advice": "", "chunks": "all"}]}),
        aggregate=FINAL,
    )
    local = PerRequestEngine(
        rules=[(r"4817", job_reply("4817"))],
        default=job_reply(None),
        timeout_on="stall was painted",
        fail_on="Lunch was served",
        model="local",
    )
    result = await MinionS(local, remote, prices).run(pages_task(PAGES))

    jobs = result.rounds[0].jobs
    assert jobs is not None
    assert (jobs.run, jobs.kept) == (4, 1)  # the code was found: its job's result was kept
    assert jobs.dropped == {"no_answer": 1, "timeout": 1, "engine_error": 1}
    assert result.answer == "4817" and result.error is None
    (local_call,) = result.usage.local_calls
    assert local_call.requests == 4 and sorted(local_call.finish_reasons).count("error") == 2
    assert any("failed on 2 of 4 requests" in warning for warning in result.warnings)


async def test_minion_over_an_unchunked_document_fails_with_its_usage(
    pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    remote = ScriptedEngine(default="What is the code?", model="gpt-4o", context_window=16_384)
    local = ScriptedEngine(fail_on="access code", model="local", context_window=8192)
    # The remote opens the chat, so the run has remote usage to keep when the local model fails.
    result = await Minion(local, remote, prices, remote_opens=True).run(pages_task(PAGES[:2]))

    assert result.error is not None
    assert result.error.startswith("round 1: the local model failed: scripted failure")
    assert result.answer == ""
    assert result.usage.remote.prompt_tokens > 0  # the remote's opening message was paid for
    assert result.usage.local_requests == 1
    assert result.usage.local_calls[0].finish_reasons == ["error"]
    assert any("the run failed" in warning for warning in result.warnings)
