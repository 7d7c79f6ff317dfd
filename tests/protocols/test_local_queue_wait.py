"""A run's Result reports how long its own local requests waited in the local engine's
client-side queue (``timings.local_queue_wait_s``), even when concurrent runs share the engine;
an engine without such a queue reports 0."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from support.openai_server import FaultPlan, build_app, serve_in_thread
from support.scripted_engine import ScriptedEngine, SlowScriptedEngine

from engines.base import GenerationRequest
from engines.local_server_engine import LocalServerEngine
from engines.prices import PriceTable
from protocols import LocalOnly
from protocols.task import Task

PAGES = ["The access code for the north warehouse is 4817."]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FaultPlan]]:
    faults = FaultPlan()
    # Every request takes 0.05 s on the server before its first word.
    with serve_in_thread(build_app(SlowScriptedEngine(delay_s=0.05), faults)) as url:
        yield url + "/v1", faults


async def test_concurrent_runs_each_report_their_own_queue_wait(
    server: tuple[str, FaultPlan],
    pages_task: Callable[..., Task],
    remote_engine: Callable[..., ScriptedEngine],
    prices: PriceTable,
) -> None:
    url, faults = server
    engine = LocalServerEngine("test-model", base_url=url, max_concurrency=1)
    faults.reset()
    # A request outside both runs holds the one slot for ~2 s (its echo is 11 words, sent 0.2 s
    # apart), so both runs' requests must queue behind it, and the second behind the first.
    faults.push("slow:0.2")
    hold = GenerationRequest.from_prompt("hold the one slot for a while, word by word, please")
    blocker = asyncio.create_task(engine.generate_one(hold))
    deadline = time.monotonic() + 10
    while engine.stats.in_flight == 0:
        assert time.monotonic() < deadline, "the blocking request never started"
        await asyncio.sleep(0.01)
    protocol = LocalOnly(engine, remote_engine(), prices)
    first, second = await asyncio.gather(
        protocol.run(pages_task(PAGES)), protocol.run(pages_task(PAGES, question="Who?"))
    )
    await blocker
    await engine.aclose()

    waits = [first.timings.local_queue_wait_s, second.timings.local_queue_wait_s]
    assert all(result.usage.local_requests == 1 for result in (first, second))
    # Each run is charged its own request's wait, not the engine's total: together they are the
    # engine's total (the blocker went straight in), and the later one waited at least the
    # earlier one's whole request (0.05 s on the server) longer.
    assert min(waits) > 0.5
    assert max(waits) - min(waits) >= 0.05
    assert sum(waits) == pytest.approx(engine.stats.queued_s, abs=0.01)
    for result in (first, second):
        timings = result.timings
        assert timings.local_queue_wait_max_s == timings.local_queue_wait_s  # one request
        assert timings.local_queue_wait_s <= timings.local_s  # part of the local wall time
        assert result.usage.local_calls[0].queued_s == timings.local_queue_wait_s


async def test_an_engine_without_a_client_side_queue_reports_no_wait(
    pages_task: Callable[..., Task],
    remote_engine: Callable[..., ScriptedEngine],
    prices: PriceTable,
) -> None:
    result = await LocalOnly(ScriptedEngine(), remote_engine(), prices).run(pages_task(PAGES))
    assert result.usage.local_requests == 1
    assert result.timings.local_queue_wait_s == 0.0
    assert result.timings.local_queue_wait_max_s == 0.0
