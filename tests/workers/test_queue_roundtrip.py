"""QueuedEngine <-> Worker through a real Redis: results, batching, reuse, fail-fast, cancel."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from support.redis_queue import TEST_TIMING, wait_until
from support.scripted_engine import ScriptedEngine, SlowScriptedEngine, echo

from engines.base import GenerationRequest, GenerationResult
from engines.errors import EngineCapabilityError
from engines.usage import Usage
from workers import keys
from workers.queue import NoLiveWorkerError, QueuedEngine, pool_depth
from workers.queue.jobs import decode_outcome, encode_generation
from workers.queue.registry import heartbeat
from workers.worker import Worker

StartWorker = Callable[..., Awaitable[Worker]]


def prompts(count: int, tag: str = "p") -> list[GenerationRequest]:
    return [GenerationRequest.from_prompt(f"{tag} {i}", max_tokens=16) for i in range(count)]


def queued(client: aioredis.Redis, **options: Any) -> QueuedEngine:
    options.setdefault("timing", TEST_TIMING)
    return QueuedEngine(client, **options)


async def test_results_come_back_in_order_with_usage(
    redis: aioredis.Redis, start_worker: StartWorker
) -> None:
    engine = ScriptedEngine(default=echo)
    await start_worker(engine, batch=16)
    results = await queued(redis).generate(prompts(40))
    assert [r.text for r in results] == [f"echo p {i}" for i in range(40)]
    assert all(r.usage.prompt_tokens == 2 and r.usage.completion_tokens == 3 for r in results)
    assert all(r.model == "scripted" and r.finish_reason == "stop" for r in results)
    # the worker read up to 16 entries at a time and gave each read to the engine as one batch
    assert max(engine.batches) > 1 and max(engine.batches) <= 16
    assert sum(engine.batches) == 40
    depth = await pool_depth(redis, "default")
    assert (depth.queued, depth.held) == (0, 0)
    assert depth.stats["completed"] == "40"


async def test_score_runs_on_the_worker(redis: aioredis.Redis, start_worker: StartWorker) -> None:
    await start_worker(ScriptedEngine())
    scores = await queued(redis).score("the cat sat", ["the cat", "a dog"])
    assert scores == pytest.approx([-0.2, -10.0])


async def test_for_pool_takes_model_and_context_from_the_workers(
    redis: aioredis.Redis, start_worker: StartWorker
) -> None:
    await start_worker(ScriptedEngine(model="small-lm", context_window=2048))
    engine = await QueuedEngine.for_pool(redis, "default", token_counter=len)
    assert (engine.model, engine.context_window, engine.count_tokens("abcd")) == (
        "small-lm",
        2048,
        4,
    )
    assert engine.describe()["pool"] == "default"


async def test_no_live_worker_fails_fast(redis: aioredis.Redis) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(NoLiveWorkerError, match="no live worker serves local-model pool 'gpu'"):
        await queued(redis, pool="gpu").generate(prompts(1))
    with pytest.raises(NoLiveWorkerError):
        await QueuedEngine.for_pool(redis, "gpu")
    assert asyncio.get_running_loop().time() - started < 1.0
    assert await redis.xlen(keys.job_stream("gpu")) == 0


async def test_a_pool_whose_workers_all_died_fails_the_call(redis: aioredis.Redis) -> None:
    # A registration that expires and no process behind it: a worker that died.
    info = {"pool": "default", "model": "m", "context_window": "512"}
    await heartbeat(redis, "ghost", info, ttl_s=0.3)
    timing = dataclasses.replace(TEST_TIMING, no_worker_grace_s=0.3)
    with pytest.raises(NoLiveWorkerError, match="1 job"):
        await asyncio.wait_for(queued(redis, timing=timing).generate(prompts(1)), timeout=10)
    assert await redis.xlen(keys.job_stream("default")) == 0  # its job was withdrawn


async def test_a_restarted_run_reuses_recorded_results(
    redis: aioredis.Redis, start_worker: StartWorker
) -> None:
    engine = ScriptedEngine(default=echo)
    await start_worker(engine)
    requests = prompts(3) + prompts(1)  # "p 0" twice: two jobs, two ids
    first = await queued(redis, task_id="task-1").generate(requests)
    calls = len(engine.calls)
    again = await queued(redis, task_id="task-1").generate(requests)  # a new runner, same task
    assert again == first and len(engine.calls) == calls == 4
    other = await queued(redis, task_id="task-2").generate(requests)
    assert len(engine.calls) == 8 and [r.text for r in other] == [r.text for r in first]
    assert (await redis.hgetall(keys.pool_stats("default")))["reused"] == "4"


async def test_cancelling_a_call_withdraws_its_queued_jobs(
    redis: aioredis.Redis, start_worker: StartWorker
) -> None:
    engine = SlowScriptedEngine(delay_s=0.5, crash_on=None)
    await start_worker(engine, batch=1)
    call = asyncio.create_task(queued(redis).generate(prompts(6)))
    stream = keys.job_stream("default")
    await wait_until(lambda: _held(redis), what="the worker to hold a job")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await redis.xlen(stream) <= 1  # at most the one in the engine remains
    await wait_until(lambda: _empty(redis), what="the held job to finish")
    assert len(engine.calls) <= 2
    assert not await redis.keys("mgw:reply:*")


async def _held(client: aioredis.Redis) -> bool:
    return int((await client.xpending(keys.job_stream("default"), keys.JOB_GROUP))["pending"]) > 0


async def _empty(client: aioredis.Redis) -> bool:
    return int(await client.xlen(keys.job_stream("default"))) == 0


class NoScoreEngine(ScriptedEngine):
    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        raise EngineCapabilityError("this engine cannot score")


async def test_a_refused_job_fails_at_once_without_retries(
    redis: aioredis.Redis, start_worker: StartWorker
) -> None:
    await start_worker(NoScoreEngine())
    with pytest.raises(EngineCapabilityError, match="cannot score"):
        await queued(redis).score("prefix", ["x"])
    stats = await redis.hgetall(keys.pool_stats("default"))
    assert stats["failed"] == "1" and "retried" not in stats and "dead_lettered" not in stats


async def test_backpressure_holds_new_jobs_until_there_is_room(
    redis: aioredis.Redis, start_worker: StartWorker
) -> None:
    engine = SlowScriptedEngine(delay_s=0.1, crash_on=None)
    await start_worker(engine, batch=1)
    stream = keys.job_stream("default")
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(int(await redis.xlen(stream)))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    first = asyncio.create_task(queued(redis, max_queued_jobs=4).generate(prompts(6, "a")))
    await wait_until(lambda: _length_at_least(redis, 5), what="the first call's jobs")
    second = await queued(redis, max_queued_jobs=4).generate(prompts(2, "b"))
    await first
    watcher.cancel()
    assert [r.text for r in second] == ["echo b 0", "echo b 1"]
    # the queue never held more than the first call: the second waited until 2 had drained
    assert max(seen) == 6
    assert [c.messages[-1].content for c in engine.calls][-2:] == ["b 0", "b 1"]


async def _length_at_least(client: aioredis.Redis, count: int) -> bool:
    return int(await client.xlen(keys.job_stream("default"))) >= count


def test_a_generation_keeps_its_local_queue_wait_through_the_queue() -> None:
    # A worker's engine may queue requests itself (a local server): the wait comes back with the
    # result, so the run that sent the job reports it; an older outcome without it reads as 0.
    generation = GenerationResult("hi", "stop", Usage(3, 1), "m", queued_s=1.25)
    assert decode_outcome(encode_generation(generation)).generation == generation
    older = json.loads(encode_generation(generation))
    del older["queued_s"]
    decoded = decode_outcome(json.dumps(older)).generation
    assert decoded is not None and decoded.queued_s == 0.0
