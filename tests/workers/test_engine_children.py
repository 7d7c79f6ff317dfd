"""Engine child processes die with their owner however it dies: real processes, real SIGKILLs.
The fast tests use an owner that forks and spawns sleepers (as vLLM starts its engine core and
workers); the model test SIGKILLs a real ``minions-gw worker`` with its vLLM engine loaded."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from support.paths import MODEL_CACHE_DIR, REPO_ROOT
from support.processes import Processes, process_env
from support.redis_queue import wait_for_workers

from engines.child_guard import ChildGuard, descendants, reap_orphans, start_time

pytestmark = pytest.mark.timeout(120)

OWNER = textwrap.dedent(
    """
    import multiprocessing, os, sys, time
    from pathlib import Path
    from engines.child_guard import ChildGuard

    def grandchild():
        time.sleep(600)

    def child():
        multiprocessing.get_context("spawn").Process(target=grandchild).start()
        time.sleep(600)

    if __name__ == "__main__":
        guard = ChildGuard(Path(sys.argv[1]))
        multiprocessing.get_context("fork").Process(target=child).start()
        print(guard.watchdog_pid, flush=True)
        time.sleep(600)
    """
)


def start_owner(tmp_path: Path) -> tuple[subprocess.Popen[str], int, dict[int, int]]:
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    owner = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "engines")],
        stdout=subprocess.PIPE,
        text=True,
        env=process_env(),
        cwd=REPO_ROOT,
    )
    assert owner.stdout is not None
    watchdog = int(owner.stdout.readline())
    deadline = time.monotonic() + 30
    while True:  # the fork child, its spawned grandchild (and the spawn resource tracker)
        children = {p: t for p, t in descendants(owner.pid).items() if p != watchdog}
        if len(children) >= 2 and (tmp_path / "engines" / f"{owner.pid}.json").exists():
            return owner, watchdog, children
        assert time.monotonic() < deadline, f"children never started: {children}"
        time.sleep(0.1)


def command_lines(pids: dict[int, int]) -> list[bytes]:
    return [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids]


def wait_all_gone(processes: dict[int, int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while alive := [p for p, t in processes.items() if start_time(p) == t]:
        assert time.monotonic() < deadline, f"still running: {alive}"
        time.sleep(0.05)


def test_children_die_within_a_second_or_two_of_a_sigkilled_owner(tmp_path: Path) -> None:
    owner, watchdog, children = start_owner(tmp_path)
    time.sleep(1.5)  # let the watchdog see the grandchild too (it looks once a second)
    children = {p: t for p, t in descendants(owner.pid).items() if p != watchdog}
    owner.kill()
    owner.wait()
    wait_all_gone(children, timeout_s=3.0)
    wait_all_gone({watchdog: start_time(watchdog) or 0}, timeout_s=3.0)
    assert not list((tmp_path / "engines").glob("*.json"))


def test_a_new_guard_stops_what_a_dead_owner_and_its_watchdog_left(tmp_path: Path) -> None:
    owner, watchdog, _ = start_owner(tmp_path)
    time.sleep(1.5)
    children = {p: t for p, t in descendants(owner.pid).items() if p != watchdog}
    os.kill(watchdog, signal.SIGKILL)  # nobody watches now
    owner.kill()
    owner.wait()
    time.sleep(0.5)
    assert all(start_time(p) == t for p, t in children.items()), "expected orphans"
    guard = ChildGuard(tmp_path / "engines")  # a new worker on the same data dir
    try:
        wait_all_gone(children, timeout_s=3.0)
        assert reap_orphans(tmp_path / "engines") == []
    finally:
        guard.close()


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_sigkilled_vllm_worker_leaves_no_engine_process(
    redis: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    processes = Processes(tmp_path)
    env = process_env(MGW_DATA_DIR=str(MODEL_CACHE_DIR), MGW_LOCAL_MAX_MODEL_LEN="2048")
    worker = processes.cli(
        "worker",
        "worker",
        "--engine",
        "vllm",
        "--pool",
        "guarded",
        "--name",
        "guarded-worker",
        "--redis-url",
        redis_url,
        "--no-studies",
        env=env,
    )
    try:
        await wait_for_workers(redis, ["guarded-worker"], "guarded", timeout_s=540)
        engine = descendants(worker.pid)
        names = command_lines(engine)
        assert any(b"VLLM::EngineCore" in name for name in names), names
        await asyncio.sleep(1.5)  # one scan of the watchdog
        engine = descendants(worker.pid)
        worker.kill()
        await asyncio.to_thread(wait_all_gone, engine, 10.0)
    finally:
        processes.close()
