"""Poison jobs: dead-lettered after ``max_deliveries``, with a clear error; nobody else hurt."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis
from support.redis_queue import TEST_TIMING, wait_for_workers
from support.scripted_engine import CRASH_EXIT_CODE, ScriptedEngine, echo

from engines.base import GenerationRequest
from workers import keys
from workers.queue import DeadLetteredError, QueuedEngine
from workers.worker import Worker

StartWorker = Callable[..., Awaitable[Worker]]
SpawnWorker = Callable[..., subprocess.Popen[bytes]]


def requests(*texts: str) -> list[GenerationRequest]:
    return [GenerationRequest.from_prompt(text, max_tokens=8) for text in texts]


async def outcomes_of(client: aioredis.Redis) -> dict[str, dict[str, Any]]:
    """Every recorded outcome, by job id, over all tasks."""
    outcomes: dict[str, dict[str, Any]] = {}
    async for key in client.scan_iter(match="mgw:results:*", count=1000):
        recorded: dict[str, str] = await client.hgetall(key)  # type: ignore[assignment]
        for job_id, raw in recorded.items():
            outcomes[job_id] = json.loads(raw)
    return outcomes


async def test_a_raising_job_is_dead_lettered_after_three_deliveries(
    redis: aioredis.Redis, start_worker: StartWorker
) -> None:
    engines = [ScriptedEngine(default=echo, fail_on="POISON") for _ in range(2)]
    for engine in engines:
        await start_worker(engine, batch=8)
    poisoned = QueuedEngine(redis, task_id="poisoned", timing=TEST_TIMING)
    healthy = [QueuedEngine(redis, task_id=f"healthy-{i}", timing=TEST_TIMING) for i in range(3)]
    calls = [poisoned.generate(requests("a", "POISON pill", "b", "c"))]
    calls += [engine.generate(requests(f"x{i}", f"y{i}")) for i, engine in enumerate(healthy)]
    results = await asyncio.gather(*calls, return_exceptions=True)

    error = results[0]
    assert isinstance(error, DeadLetteredError)
    message = str(error)
    assert "was dead-lettered after 3 deliveries to pool 'default'" in message
    assert "scripted failure on 'POISON'" in message and "poisoned" in message
    for i, result in enumerate(results[1:]):
        assert not isinstance(result, BaseException)
        assert [r.text for r in result] == [f"echo x{i}", f"echo y{i}"]

    dead: Any = await redis.xrange(keys.dead_letter_stream("default"))
    assert len(dead) == 1 and dead[0][1]["deliveries"] == "3"
    job = json.loads(dead[0][1]["job"])
    assert job["body"]["request"]["messages"][0]["content"] == "POISON pill"
    stats = await redis.hgetall(keys.pool_stats("default"))
    assert (stats["dead_lettered"], stats["retried"], stats["completed"]) == ("1", "2", "9")
    # the poison's batch mates were answered on their first delivery
    outcomes = await outcomes_of(redis)
    assert sum(1 for outcome in outcomes.values() if outcome["ok"]) == 9
    assert await redis.xlen(keys.job_stream("default")) == 0


async def test_a_job_that_crashes_every_worker_is_dead_lettered(
    redis: aioredis.Redis, spawn_worker: SpawnWorker
) -> None:
    """Each worker that takes the job dies; a supervisor restarts workers (as systemd would).
    The job is dead-lettered after 3 deliveries; its batch mates, reclaimed with it, survive
    because a job on its last delivery runs alone."""
    spawned = 0

    def spawn() -> subprocess.Popen[bytes]:
        nonlocal spawned
        spawned += 1
        return spawn_worker(f"w{spawned}", batch=8, crash_on="CRASH")

    alive = [spawn(), spawn()]
    await wait_for_workers(redis, ["w1", "w2"])
    crashes = 0

    async def supervise() -> None:
        nonlocal crashes
        while True:
            for index, process in enumerate(alive):
                if process.poll() is not None:
                    assert process.returncode == CRASH_EXIT_CODE
                    crashes += 1
                    alive[index] = spawn()
            await asyncio.sleep(0.05)

    supervisor = asyncio.create_task(supervise())
    timing = replace(TEST_TIMING, no_worker_grace_s=30)  # restarting workers takes a while
    try:
        doomed = QueuedEngine(redis, task_id="doomed", timing=timing)
        others = [QueuedEngine(redis, task_id=f"other-{i}", timing=timing) for i in range(3)]
        calls = [doomed.generate(requests("m1", "CRASH now", "m2"))]
        calls += [engine.generate(requests(f"o{i}")) for i, engine in enumerate(others)]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=60)
    finally:
        supervisor.cancel()
    error = results[0]
    assert isinstance(error, DeadLetteredError)
    assert "after 3 deliveries" in str(error) and "no worker finished it" in str(error)
    assert [[r.text for r in result] for result in results[1:]] == [  # type: ignore[union-attr]
        ["echo o0"],
        ["echo o1"],
        ["echo o2"],
    ]
    assert crashes == 3
    outcomes = await outcomes_of(redis)
    assert sorted(o.get("text", "") for o in outcomes.values() if o["ok"]) == [
        "echo m1",
        "echo m2",
        "echo o0",
        "echo o1",
        "echo o2",
    ]
    assert await redis.xlen(keys.dead_letter_stream("default")) == 1


@pytest.mark.parametrize("max_deliveries", [1])
async def test_with_one_delivery_a_failure_is_dead_lettered_at_once(
    redis: aioredis.Redis, start_worker: StartWorker, max_deliveries: int
) -> None:
    timing = replace(TEST_TIMING, max_deliveries=max_deliveries)
    await start_worker(ScriptedEngine(fail_on="BAD"), timing=timing)
    with pytest.raises(DeadLetteredError, match="after 1 deliveries"):
        await QueuedEngine(redis, timing=timing).generate(requests("BAD"))
