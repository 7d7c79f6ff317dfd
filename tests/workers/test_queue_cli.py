"""``minions-gw worker`` end to end: the real command, a real engine adapter (``openai``, against
the test OpenAI-compatible server), a real Redis; SIGTERM ends it cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from support.openai_server import FaultPlan, build_app, serve_in_thread
from support.redis_queue import TEST_TIMING, wait_for_workers
from support.scripted_engine import ScriptedEngine, echo

from engines.base import GenerationRequest
from workers.queue import QueuedEngine, live_workers

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def openai_url() -> Iterator[str]:
    with serve_in_thread(build_app(ScriptedEngine(default=echo), FaultPlan())) as url:
        yield url + "/v1"


def minions_gw(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "--log-level", "INFO", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_the_worker_command_serves_a_pool_until_sigterm(
    redis: aioredis.Redis, redis_url: str, openai_url: str
) -> None:
    process = minions_gw(
        "worker",
        "--engine",
        "openai",
        "--model",
        "remote-small",
        "--base-url",
        openai_url,
        "--pool",
        "cpu",
        "--batch",
        "4",
        "--name",
        "cli-worker",
        env={"MGW_REDIS_URL": redis_url},
    )
    try:
        await wait_for_workers(redis, ["cli-worker"], pool="cpu", timeout_s=30)
        info = (await live_workers(redis, "cpu"))["cli-worker"]
        assert (info["engine"], info["model"], info["batch"]) == ("openai", "remote-small", "4")
        engine = await QueuedEngine.for_pool(redis, "cpu", timing=TEST_TIMING)
        requests = [GenerationRequest.from_prompt(f"hello {i}", max_tokens=8) for i in range(6)]
        results = await engine.generate(requests)
        assert [r.text for r in results] == [f"echo hello {i}" for i in range(6)]
        assert {r.model for r in results} == {"remote-small"}
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, output
    assert "worker cli-worker: openai remote-small, pool 'cpu', batch 4" in output
    assert await live_workers(redis, "cpu") == {}


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--engine", "openai"], "set MGW_REDIS_URL or pass --redis-url"),
        (["--redis-url", "redis://x", "--pool", "a:b"], "pool: 'a:b' is not a valid name"),
        (["--redis-url", "redis://x", "--engine", "tgi"], "engine: must be one of"),
    ],
)
def test_the_worker_command_refuses_bad_settings_clearly(args: list[str], error: str) -> None:
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["worker", *args])
    assert result.exit_code == 2
    assert error in " ".join(result.output.split())
