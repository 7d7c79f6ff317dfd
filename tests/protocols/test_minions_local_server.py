"""MinionS with its local model behind a real llama.cpp server (2 slots, the bundled GGUF),
built as MGW_LOCAL_ENGINE=openai builds it, on a machine kept busy by a CPU burner: slow, but no
job is lost to a timeout, and the server never holds more requests than it has slots."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from support.llama_server import LlamaServer, llama_server
from support.scripted_engine import ScriptedEngine

from engines.factory import create_engine
from engines.local_server_engine import LocalServerEngine
from engines.prices import PriceTable
from protocols import MinionS
from protocols.synthetic import make_document
from protocols.task import Options, Task
from service.settings import Settings

pytestmark = pytest.mark.slow

PLAN = json.dumps(
    {
        "tasks": [
            {"task": "Find the access code for the north warehouse.", "chunks": "all"},
            {"task": "List any numbers that look like codes.", "chunks": "all"},
        ]
    }
)
FINAL = json.dumps({"decision": "final_answer", "answer": "4817", "scratchpad": ""})


@pytest.fixture
def cpu_burner() -> Iterator[None]:
    """One process spinning on a core for the whole test: the machine is busy."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        burner.kill()
        burner.wait(timeout=10)


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    with llama_server(slots=2, ctx_per_slot=2048) as running:
        yield running


async def test_minions_over_a_long_document_loses_no_job_on_a_busy_machine(
    server: LlamaServer, cpu_burner: None, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        local_engine="openai",
        local_base_url=server.url + "/v1",
        local_stall_timeout_s=30,
    )
    local = create_engine(settings.local_engine_spec())
    assert isinstance(local, LocalServerEngine) and local.max_concurrency == 2
    remote = ScriptedEngine(
        [(r"Plan the work", PLAN), (r"findings this round", FINAL)],
        model="gpt-4o",
        context_window=16_384,
    )
    document = make_document(pages=6, words_per_page=200, seed=4)
    task = Task(
        question=document.question,
        documents=(document.document,),
        options=Options(chunk_tokens=400, job_max_tokens=64, max_rounds=1),
    )
    seen = {"busy": 0, "deferred": 0.0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen["busy"] = max(seen["busy"], server.busy_slots())
            seen["deferred"] = max(seen["deferred"], server.metrics()["requests_deferred"])
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = await MinionS(local, remote, PriceTable.default()).run(task)
    finally:
        done.set()
        watcher.join(timeout=5)
        await local.aclose()

    jobs = result.rounds[0].jobs
    assert jobs is not None and jobs.run >= 8, jobs
    assert jobs.run == jobs.planned and jobs.skipped == 0
    assert "timeout" not in jobs.dropped and "engine_error" not in jobs.dropped, jobs.dropped
    assert local.stats.max_in_flight == 2 and local.stats.stalls == 0
    assert seen["busy"] <= 2 and seen["deferred"] == 0
    # Usage is the server's own count, one record for the round's jobs.
    (jobs_call,) = [c for c in result.usage.local_calls if c.purpose == "job"]
    assert jobs_call.requests == jobs.run and jobs_call.usage.prompt_tokens > 0
    # The jobs the 2 slots could not take waited on our side instead, and the Result says how
    # long: this run alone used the engine, so its waits are all the engine's.
    assert jobs_call.queued_s > 0
    assert result.timings.local_queue_wait_s == pytest.approx(local.stats.queued_s)
    assert result.timings.local_queue_wait_max_s == pytest.approx(local.stats.max_queued_s)
