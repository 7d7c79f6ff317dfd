"""The study queue on the workers: real Redis, real worker processes (``support.queue_worker
--studies``, the same ``run_until_signalled(worker, StudyConsumer)`` as ``minions-gw worker``)
and real study child processes, over the test-only ``support.fake_study`` (its ``full`` preset
runs 6 s, its ``quick`` one at once)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from support.fake_study import Params
from support.redis_queue import TEST_TIMING, wait_until
from support.scripted_engine import SlowScriptedEngine

from analysis.studies import study_registry
from engines.base import GenerationRequest
from workers import keys
from workers.queue import QueuedEngine
from workers.studies.consumer import StudyConsumer, StudyTiming
from workers.studies.store import StudyRecord, StudyStore, new_study_id
from workers.worker import Worker

EXTRA_STUDIES = {"fake": "support.fake_study", "broken": "support.broken_study"}
REGISTRY = study_registry(EXTRA_STUDIES)
# A study entry idle for 3 heartbeats (0.9 s) is taken over.
FAST = StudyTiming(heartbeat_s=0.3, poll_s=0.1, terminate_grace_s=2.0, progress_interval_s=0.1)


async def queue_study(redis: aioredis.Redis, preset: str = "full", name: str = "fake") -> str:
    record = StudyRecord(
        id=new_study_id(),
        name=name,
        key_id="test",
        params=Params.preset(preset).model_dump(mode="json", by_alias=True),  # type: ignore[arg-type]
    )
    await StudyStore(redis).enqueue(record)
    return record.id


async def study(redis: aioredis.Redis, study_id: str) -> StudyRecord:
    record = await StudyStore(redis).get(study_id)
    assert record is not None
    return record


async def wait_for_status(
    redis: aioredis.Redis, study_id: str, statuses: set[str], timeout_s: float = 30.0
) -> StudyRecord:
    async def reached() -> bool:
        return (await study(redis, study_id)).status in statuses

    await wait_until(reached, timeout_s, f"study {study_id} to become one of {statuses}")
    return await study(redis, study_id)


async def wait_until_stepping(redis: aioredis.Redis, study_id: str) -> None:
    async def stepping() -> bool:
        record = await study(redis, study_id)
        return record.status == "running" and record.progress.get("done", 0) >= 1

    await wait_until(stepping, 30, f"study {study_id} to run")


def pid_of(data_dir: Path, study_id: str) -> int:
    return int((data_dir / "studies" / study_id / "pid").read_text())


def is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def study_worker(
    spawn_worker: Callable[..., subprocess.Popen[bytes]], name: str, data_dir: Path
) -> subprocess.Popen[bytes]:
    return spawn_worker(
        name,
        studies=True,
        data_dir=data_dir,
        extra_studies=json.dumps(EXTRA_STUDIES),
        study_timing=json.dumps(dataclasses.asdict(FAST)),
    )


async def test_lm_jobs_are_served_while_a_study_runs_and_a_killed_workers_study_is_reclaimed(
    redis: aioredis.Redis, spawn_worker: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    first = study_worker(spawn_worker, "first", tmp_path / "first")
    study_id = await queue_study(redis)
    await wait_until_stepping(redis, study_id)
    assert (await study(redis, study_id)).worker == "first"

    # The study runs in its own process: the worker still answers language-model jobs at once.
    engine = await QueuedEngine.for_pool(redis, "default", timing=TEST_TIMING)
    loop = asyncio.get_running_loop()
    for round_ in range(3):
        started = loop.time()
        requests = [GenerationRequest.from_prompt(f"q{round_}.{i}", max_tokens=8) for i in range(4)]
        results = await engine.generate(requests)
        assert [r.text for r in results] == [f"echo q{round_}.{i}" for i in range(4)]
        assert loop.time() - started < 3.0, "an LM call waited behind the study"
    assert (await study(redis, study_id)).status == "running"

    # SIGKILL: the worker cannot clean up; its child notices (end of file on its stdin) and
    # exits, and the entry stays pending until another worker reclaims it after 3 heartbeats.
    child = pid_of(tmp_path / "first", study_id)
    first.kill()
    first.wait(timeout=10)

    async def child_gone() -> bool:
        return is_gone(child)

    await wait_until(child_gone, 10, "the orphaned study process to exit")
    pending: Any = await redis.xpending(keys.STUDY_STREAM, keys.STUDY_GROUP)
    assert pending["pending"] == 1 and (await study(redis, study_id)).status == "running"

    study_worker(spawn_worker, "second", tmp_path / "second")
    record = await wait_for_status(redis, study_id, {"succeeded", "failed"}, timeout_s=40)
    assert record.status == "succeeded", record.error
    assert record.worker == "second"
    assert record.result is not None and record.result["metrics"]["niceness"] == 19
    assert await redis.xlen(keys.STUDY_STREAM) == 0  # acknowledged and deleted


async def test_sigterm_during_a_study_puts_it_back_in_the_queue(
    redis: aioredis.Redis, spawn_worker: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    worker = study_worker(spawn_worker, "stopping", tmp_path)
    study_id = await queue_study(redis)
    await wait_until_stepping(redis, study_id)
    child = pid_of(tmp_path, study_id)
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 15) == 0
    assert is_gone(child)  # terminated (and reaped), not left running on its own
    record = await study(redis, study_id)
    assert (record.status, record.worker, record.started_at) == ("queued", None, None)
    assert await StudyStore(redis).queued() == 1  # a fresh entry, waiting
    pending: Any = await redis.xpending(keys.STUDY_STREAM, keys.STUDY_GROUP)
    assert pending["pending"] == 0


async def test_a_study_every_worker_died_on_fails_after_max_deliveries(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    store = StudyStore(redis)
    await store.ensure_group()
    study_id = await queue_study(redis, "quick")
    # Three consumers took it and died: one delivery by read, two by reclaim.
    await redis.xreadgroup(keys.STUDY_GROUP, "ghost-1", {keys.STUDY_STREAM: ">"}, count=1)
    (entry,) = await redis.xrange(keys.STUDY_STREAM)
    for ghost in ("ghost-2", "ghost-3"):
        await redis.xclaim(keys.STUDY_STREAM, keys.STUDY_GROUP, ghost, 0, [entry[0]])
    await store.update(study_id, status="running")

    consumer = StudyConsumer(redis, tmp_path, registry=REGISTRY, name="survivor", timing=FAST)
    running = asyncio.create_task(consumer.run())
    try:
        record = await wait_for_status(redis, study_id, {"failed", "succeeded"}, timeout_s=10)
    finally:
        consumer.stop()
        await asyncio.wait_for(running, 10)
    assert record.status == "failed"
    assert record.error == (
        "the study was started 3 times and each worker that ran it died or stalled"
    )
    assert consumer.studies_run == 0  # failed without being run a fourth time
    assert await redis.xlen(keys.STUDY_STREAM) == 0


async def test_a_study_waits_while_its_worker_has_a_language_model_job(
    redis: aioredis.Redis, start_worker: Callable[..., Any], tmp_path: Path
) -> None:
    worker: Worker = await start_worker(SlowScriptedEngine(2.0, None))  # a 2 s LM job
    consumer = StudyConsumer(
        redis,
        tmp_path,
        registry=REGISTRY,
        name="gated",
        timing=FAST,
        may_start=lambda: worker.idle,  # what ``minions-gw worker --studies`` passes
    )
    running = asyncio.create_task(consumer.run())
    try:
        engine = await QueuedEngine.for_pool(redis, "default", timing=TEST_TIMING)
        call = asyncio.create_task(engine.generate([GenerationRequest.from_prompt("lm first")]))

        async def busy() -> bool:
            return not worker.idle

        await wait_until(busy, 10, "the worker to take the LM job")
        study_id = await queue_study(redis, "quick")
        await asyncio.sleep(0.6)  # six polls of the study consumer while the job runs
        assert (await study(redis, study_id)).status == "queued"
        assert [r.text for r in await call] == ["echo lm first"]
        record = await wait_for_status(redis, study_id, {"failed", "succeeded"})
        assert record.status == "succeeded", record.error
        assert record.worker == "gated"
    finally:
        consumer.stop()
        await asyncio.wait_for(running, 10)
