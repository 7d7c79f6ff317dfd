"""The local-only and remote-only baselines with scripted engines."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support.scripted_engine import ScriptedEngine

from engines.base import GenerationRequest
from engines.prices import PriceTable
from protocols import ContextOverflowError, LocalOnly, RemoteOnly
from protocols.task import Task

PAGES = ["The weather was mild.", "The access code is 4817.", "Lunch was at noon."]


def prompt_of(request: GenerationRequest) -> str:
    return "\n".join(message.content for message in request.messages)


async def test_remote_only_sends_everything_in_one_call(
    pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    remote = ScriptedEngine(default="4817", model="gpt-4o")
    local = ScriptedEngine(model="local")
    result = await RemoteOnly(local, remote, prices).run(pages_task(PAGES))

    assert result.answer == "4817" and result.protocol == "remote_only"
    (call,) = remote.calls
    assert all(page in prompt_of(call) for page in PAGES)
    assert local.calls == [] and result.usage.local.total_tokens == 0
    assert [c.purpose for c in result.usage.remote_calls] == ["answer"]
    assert result.usage.remote.prompt_tokens == ScriptedEngine.words(prompt_of(call))
    assert result.cost_usd.remote == pytest.approx(
        (result.usage.remote.prompt_tokens * 2.5 + 1 * 10.0) / 1e6
    )
    assert result.compressions == []


async def test_remote_only_refuses_documents_beyond_its_context(
    pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    remote = ScriptedEngine(model="gpt-4o", context_window=200)
    with pytest.raises(ContextOverflowError, match="context window"):
        await RemoteOnly(remote, remote, prices).run(pages_task(["word " * 500]))
    assert remote.calls == []


async def test_local_only_reads_short_documents_in_one_call(
    pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    local = ScriptedEngine(default="4817", model="local")
    remote = ScriptedEngine(model="gpt-4o")
    result = await LocalOnly(local, remote, prices).run(pages_task(PAGES))
    assert result.answer == "4817" and len(local.calls) == 1
    assert remote.calls == [] and result.usage.remote.total_tokens == 0
    assert result.cost_usd.total == 0


async def test_local_only_maps_chunks_and_combines_the_notes(
    pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    pages = [f"Routine page {i} about nothing much. " * 15 for i in range(10)]
    pages[3] = "The access code is 4817."
    pages[8] = "Reminder: the access code is 4817."
    local = ScriptedEngine(
        [
            (r"Notes taken", "The code is 4817."),
            (r"Excerpt.*4817", "code 4817"),
            (r"Excerpt", "NONE"),
        ],
        model="local",
        context_window=600,
    )
    result = await LocalOnly(local, local, prices, local_max_tokens=64).run(pages_task(pages))

    assert result.answer == "The code is 4817."
    assert local.batches == [10, 1]  # the map in one batch, then one combine call
    assert [o.chunk_id for o in result.rounds[0].local_outputs] == [3, 8]
    assert [c.purpose for c in result.usage.local_calls] == ["map", "combine"]
    assert result.remote_stand_in and result.usage.remote.total_tokens == 0


async def test_local_only_combines_in_levels_when_notes_overflow(
    pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    pages = [f"Page {i} fact. " + "more filler words here " * 3 for i in range(40)]
    local = ScriptedEngine(
        [(r"Notes taken", "combined note"), (r"Excerpt", "a note of some twenty words " * 4)],
        model="local",
        context_window=400,
    )
    result = await LocalOnly(local, local, prices, local_max_tokens=40).run(pages_task(pages))
    combine_batches = [c.requests for c in result.usage.local_calls if c.purpose == "combine"]
    assert len(combine_batches) >= 2 and combine_batches[-1] == 1
    assert result.answer == "combined note"


async def test_local_only_reports_nothing_found(
    pages_task: Callable[..., Task], prices: PriceTable
) -> None:
    local = ScriptedEngine(default="NONE", model="local", context_window=300)
    pages = [f"Page {i} " + "filler words " * 40 for i in range(5)]
    result = await LocalOnly(local, local, prices, local_max_tokens=32).run(pages_task(pages))
    assert "do not appear to contain" in result.answer
    assert any("no chunk" in w for w in result.warnings)
