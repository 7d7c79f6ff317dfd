"""Faults with real worker processes: SIGKILL mid-batch, SIGTERM, a Redis restart, and the
stream staying bounded over 10,000 jobs."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable

import redis.asyncio as aioredis
from support.redis_queue import TEST_TIMING, EmbeddedRedisServer, wait_for_workers, wait_until

from engines.base import GenerationRequest, GenerationResult
from workers import keys
from workers.queue import QueuedEngine, live_workers

SpawnWorker = Callable[..., subprocess.Popen[bytes]]
STREAM = keys.job_stream("default")


def requests(task: int, count: int) -> list[GenerationRequest]:
    return [GenerationRequest.from_prompt(f"t{task} j{j}", max_tokens=8) for j in range(count)]


def texts(results: list[GenerationResult]) -> list[str]:
    return [result.text for result in results]


async def held_by(client: aioredis.Redis, consumer: str) -> int:
    rows = await client.xpending_range(STREAM, keys.JOB_GROUP, "-", "+", 1000, consumer)
    return len(rows)


async def recorded_results(client: aioredis.Redis) -> dict[str, int]:
    """How many job results each task has recorded (one hash per task, a field per job)."""
    return {
        key.removeprefix("mgw:results:"): int(await client.hlen(key))
        async for key in client.scan_iter(match="mgw:results:*", count=1000)
    }


async def test_jobs_of_a_killed_worker_are_reclaimed_and_each_finishes_once(
    redis: aioredis.Redis, spawn_worker: SpawnWorker
) -> None:
    victim = spawn_worker("victim", batch=8, delay=0.2)
    spawn_worker("survivor", batch=8, delay=0.2)
    await wait_for_workers(redis, ["victim", "survivor"])
    tasks = [QueuedEngine(redis, task_id=f"task-{i}", timing=TEST_TIMING) for i in range(20)]
    calls = asyncio.gather(*(engine.generate(requests(i, 8)) for i, engine in enumerate(tasks)))

    async def victim_holds_a_batch() -> bool:
        return await held_by(redis, "victim") == 8

    await wait_until(victim_holds_a_batch, what="the victim to hold a batch")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=5)
    lost = await held_by(redis, "victim")
    assert lost > 0  # the killed worker's entries stay pending under its name

    results = await asyncio.wait_for(calls, timeout=60)
    assert [texts(r) for r in results] == [[f"echo t{i} j{j}" for j in range(8)] for i in range(20)]
    assert await held_by(redis, "victim") == 0
    stats = await redis.hgetall(keys.pool_stats("default"))
    assert int(stats["reclaimed"]) >= lost
    assert int(stats["enqueued"]) == 160
    # one recorded result per job: 8 fields in each task's results hash, overwritten if run twice
    assert await recorded_results(redis) == {f"task-{i}": 8 for i in range(20)}
    assert await redis.xlen(STREAM) == 0
    assert (await redis.xpending(STREAM, keys.JOB_GROUP))["pending"] == 0
    assert list(await live_workers(redis, "default")) == ["survivor"]


async def test_sigterm_finishes_the_batch_in_hand_then_leaves(
    redis: aioredis.Redis, spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker("leaver", batch=4, delay=1.0)
    await wait_for_workers(redis, ["leaver"])
    call = asyncio.create_task(QueuedEngine(redis, timing=TEST_TIMING).generate(requests(0, 4)))

    async def holds_all() -> bool:
        return await held_by(redis, "leaver") == 4

    await wait_until(holds_all, what="the worker to hold the batch")
    worker.send_signal(signal.SIGTERM)
    results = await asyncio.wait_for(call, timeout=10)  # finished by the leaving worker
    assert texts(results) == [f"echo t0 j{j}" for j in range(4)]
    assert await asyncio.to_thread(worker.wait, 10) == 0
    assert await live_workers(redis, "default") == {}
    consumers = await redis.xinfo_consumers(STREAM, keys.JOB_GROUP)
    assert [c["name"] for c in consumers] == []  # it held nothing, so it left the group too
    stats = await redis.hgetall(keys.pool_stats("default"))
    assert stats["completed"] == "4" and "reclaimed" not in stats


async def test_work_survives_a_redis_restart(
    embedded_redis: EmbeddedRedisServer, spawn_worker: SpawnWorker
) -> None:
    client = aioredis.Redis.from_url(embedded_redis.url, decode_responses=True)
    try:
        spawn_worker("steady", url=embedded_redis.url, batch=4, delay=0.4)
        await wait_for_workers(client, ["steady"])
        engines = [QueuedEngine(client, task_id=f"r{i}", timing=TEST_TIMING) for i in range(3)]
        calls = asyncio.gather(*(e.generate(requests(i, 4)) for i, e in enumerate(engines)))

        async def in_progress() -> bool:
            return await held_by(client, "steady") > 0

        await wait_until(in_progress, what="the worker to hold jobs")
        await asyncio.to_thread(embedded_redis.stop)
        await asyncio.sleep(1.5)  # down long enough for every client's retries to run out
        await asyncio.to_thread(embedded_redis.start)
        results = await asyncio.wait_for(calls, timeout=30)
        assert [texts(r) for r in results] == [
            [f"echo t{i} j{j}" for j in range(4)] for i in range(3)
        ]
        assert await client.xlen(STREAM) == 0
        assert await client.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        await client.aclose()


async def test_ten_thousand_jobs_leave_the_stream_empty(
    redis: aioredis.Redis, spawn_worker: SpawnWorker
) -> None:
    spawn_worker("bulk-1", batch=256)
    spawn_worker("bulk-2", batch=256)
    await wait_for_workers(redis, ["bulk-1", "bulk-2"])
    engines = [QueuedEngine(redis, timing=TEST_TIMING) for _ in range(50)]
    results = await asyncio.wait_for(
        asyncio.gather(*(e.generate(requests(i, 200)) for i, e in enumerate(engines))), timeout=60
    )
    assert sum(len(r) for r in results) == 10_000
    assert texts(results[49])[-1] == "echo t49 j199"
    info = await redis.xinfo_stream(STREAM)
    assert info["length"] == 0
    assert (await redis.xpending(STREAM, keys.JOB_GROUP))["pending"] == 0
    assert [key async for key in redis.scan_iter(match="mgw:reply:*")] == []
    assert sum((await recorded_results(redis)).values()) == 10_000
    some_task = engines[0].task_id
    assert 0 < await redis.ttl(keys.job_results(some_task)) <= TEST_TIMING.result_ttl_s
