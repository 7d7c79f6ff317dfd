"""``minions-gw worker-check``, the worker images' health check, as a real process: exit 1 while
no worker of the pool runs on this host, 0 once one registered, 1 again after it deregistered."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from gateway_helpers import scripted_engines
from support.processes import process_env
from support.redis_queue import TEST_TIMING, wait_for_workers

from service.store import Store
from workers.worker import Worker


async def check(redis_url: str, pool: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cli", "worker-check", "--redis-url", redis_url]
    env = process_env(MGW_WORKER_POOL=pool)  # the pool as the images give it
    return await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=60
    )


async def test_worker_check_follows_this_host_s_registration(redis_url: str, store: Store) -> None:
    before = await check(redis_url, "hc")
    assert before.returncode == 1, before.stdout + before.stderr
    assert "no live worker of pool 'hc'" in before.stdout
    worker = Worker(store.redis, scripted_engines().local, pool="hc", batch=1, timing=TEST_TIMING)
    running = asyncio.create_task(worker.run())
    try:
        await wait_for_workers(store.redis, [worker.name], "hc")
        during = await check(redis_url, "hc")
        assert during.returncode == 0, during.stdout + during.stderr
        assert worker.name in during.stdout
        other_pool = await check(redis_url, "elsewhere")
        assert other_pool.returncode == 1
    finally:
        worker.stop()
        await asyncio.wait_for(running, timeout=10)
    after = await check(redis_url, "hc")
    assert after.returncode == 1, after.stdout
    unreachable = await check("redis://127.0.0.1:9/0", "hc")
    assert unreachable.returncode == 1 and "Redis unreachable" in unreachable.stdout
