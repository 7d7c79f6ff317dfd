"""Task runners as real processes: ``minions-gw serve`` and ``minions-gw runner`` sharing one
task queue, a SIGKILLed runner's task completed by the other without paying a remote call twice,
a graceful SIGTERM, and a poison task that kills every runner that takes it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_helpers import ADMIN_KEY, CODE_DOC, auth
from support.paths import MODEL_CACHE_DIR
from support.processes import Process, Processes, free_port, process_env
from support.redis_queue import TEST_TIMING, wait_for_workers, wait_until
from support.scripted_engine import CRASH_EXIT_CODE, ScriptedEngine

from engines.bundled_model import BUNDLED_MODEL, ensure_bundled_model
from service import keys
from service.store import Store
from service.store.api_keys import key_id_of
from workers import keys as worker_keys

pytestmark = pytest.mark.slow

POOL = "gpu"
MINIONS = {
    "protocol": "minions",
    "question": "What is the access code?",
    "documents": [{"text": CODE_DOC}],
    "options": {"chunking": "pages", "max_cost_usd": 0.5},
}


def gateway_env(redis_url: str, remote_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Real engines: the remote is the test server, local calls go to queue workers of ``POOL``
    (the in-process local engine is an OpenAI adapter that is never called)."""
    return process_env(
        MGW_REDIS_URL=redis_url,
        MGW_DATA_DIR=str(data_dir),
        MGW_ADMIN_KEY=ADMIN_KEY,
        MGW_LOCAL_ENGINE="openai",
        MGW_LOCAL_BASE_URL="http://127.0.0.1:9/v1",
        MGW_LOCAL_POOL=POOL,
        MGW_REMOTE_BASE_URL=remote_url,
        MGW_REMOTE_MODEL="gpt-4o",
        MGW_REMOTE_API_KEY="test-remote-key",
        MGW_RUNNER_HEARTBEAT_S="0.3",
        MGW_RUNNER_CONCURRENCY="1",
        **extra,
    )


def start_worker(processes: Processes, redis_url: str, delay_s: float) -> Process:
    """A queue worker of ``POOL`` (scripted echo engine) whose every batch takes ``delay_s``."""
    timing = json.dumps(dataclasses.asdict(TEST_TIMING))
    command = [sys.executable, "-m", "support.queue_worker", "--redis-url", redis_url]
    command += ["--name", "echo-worker", "--pool", POOL, "--delay", str(delay_s)]
    return processes.start("worker", [*command, "--timing", timing], process_env())


def remote_prompts(engine: ScriptedEngine) -> list[str]:
    return ["\n".join(m.content for m in call.messages) for call in engine.calls]


async def holder_of(store: Store, task_id: str) -> str | None:
    """The runner (consumer) holding the task's stream entry, if one does."""
    entries = {
        entry_id
        for entry_id, fields in await store.redis.xrange(keys.TASK_STREAM)
        if fields.get("task") == task_id
    }
    rows: Any = await store.redis.xpending_range(keys.TASK_STREAM, keys.RUNNER_GROUP, "-", "+", 100)
    return next((str(r["consumer"]) for r in rows if r["message_id"] in entries), None)


def pid_of(consumer: str) -> int:
    # Runner names are ``runner-<host>-<pid>-<random>``.
    return int(consumer.rsplit("-", 2)[1])


def proc_view(pid: int) -> tuple[str, str]:
    """A process's memory maps and its children's pids (Linux /proc)."""
    proc = Path("/proc") / str(pid)
    return (proc / "maps").read_text(), (proc / "task" / str(pid) / "children").read_text().strip()


async def final(store: Store, task_id: str, timeout_s: float = 90.0) -> Any:
    async def ended() -> bool:
        record = await store.tasks.get(task_id)
        return record is not None and record.status in ("succeeded", "failed", "cancelled")

    await wait_until(ended, timeout_s, f"task {task_id} to end")
    return await store.tasks.get(task_id)


async def submit(url: str, body: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        made = await client.post("/v1/admin/keys", json={"name": "t"}, headers=auth(ADMIN_KEY))
        assert made.status_code == 201, made.text
        response = await client.post("/v1/tasks", json=body, headers=auth(made.json()["key"]))
        assert response.status_code == 202, response.text
        task_id: str = response.json()["id"]
        return task_id


async def test_a_sigkilled_runner_s_task_is_completed_by_the_other_without_paying_twice(
    processes: Processes,
    remote: tuple[str, ScriptedEngine],
    redis_url: str,
    store: Store,
    tmp_path: Path,
) -> None:
    remote_url, remote_engine = remote
    env = gateway_env(redis_url, remote_url, tmp_path / "data")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = processes.cli("gateway-a", "serve", "--port", str(port), env=env)
    runner = processes.cli("runner-b", "runner", env=env)
    start_worker(processes, redis_url, delay_s=2.0)  # each local batch is in flight for 2 s
    await asyncio.to_thread(gateway.wait_ready, url)
    await asyncio.to_thread(runner.wait_for_line, "runner runner-")
    await wait_for_workers(store.redis, ["echo-worker"], POOL, timeout_s=60)

    task_id = await submit(url, MINIONS)

    # Mid-flight: the plan (a paid remote call) is recorded and the local jobs are held.
    async def mid_flight() -> bool:
        held = await store.redis.xpending(worker_keys.job_stream(POOL), worker_keys.JOB_GROUP)
        return held["pending"] > 0 and await holder_of(store, task_id) is not None

    await wait_until(mid_flight, 60, "the task's local jobs to be in flight")
    assert len(remote_engine.calls) == 1 and "Plan the work" in remote_prompts(remote_engine)[0]
    assert await store.redis.hlen(keys.task_remote_calls(task_id)) == 1
    victim_name = await holder_of(store, task_id)
    assert victim_name is not None
    victim, survivor = (
        (gateway, runner) if pid_of(victim_name) == gateway.pid else (runner, gateway)
    )
    assert pid_of(victim_name) == victim.pid
    victim.popen.send_signal(signal.SIGKILL)
    victim.popen.wait(timeout=30)

    record = await final(store, task_id)
    assert record.status == "succeeded", record.error
    assert record.result["answer"] == "4817"
    assert record.attempts == 2
    prompts = remote_prompts(remote_engine)
    assert len(prompts) == len(set(prompts)) == 2, prompts  # plan + aggregation, each paid once
    assert "reclaimed task " + task_id in survivor.output()
    assert await store.redis.xlen(keys.TASK_STREAM) == 0
    assert not await store.redis.exists(keys.task_remote_calls(task_id))
    # Graceful exits: the runner command exits 0; uvicorn re-raises the SIGTERM it handled.
    code = survivor.stop()
    assert code in ((0,) if survivor is runner else (0, -signal.SIGTERM)), survivor.output()


async def test_the_runner_command_returns_its_task_to_the_queue_on_sigterm(
    processes: Processes,
    remote: tuple[str, ScriptedEngine],
    redis_url: str,
    store: Store,
    make_gateway: Callable[..., Any],
    tmp_path: Path,
) -> None:
    remote_url, remote_engine = remote
    env = gateway_env(redis_url, remote_url, tmp_path / "data")
    start_worker(processes, redis_url, delay_s=3.0)
    first = processes.cli("runner-1", "runner", "--concurrency", "2", env=env)
    # An HTTP-only gateway (no runner of its own) takes the task; only the runner runs it.
    async with make_gateway(runner_enabled=False, local_pool=POOL) as gw:
        # Ready once the worker process registered in the pool (/ready counts live workers).
        async def ready() -> bool:
            return (await gw.client.get("/ready")).status_code == 200

        await wait_until(ready, 30, "/ready once the pool has a live worker")
        key = await gw.new_key()
        response = await gw.client.post("/v1/tasks", json=MINIONS, headers=auth(key))
        task_id = response.json()["id"]
        await asyncio.to_thread(first.wait_for_line, "runner runner-")
        assert "concurrency 2" in first.output()

        async def held_by_first() -> bool:
            holder = await holder_of(store, task_id)
            return holder is not None and pid_of(holder) == first.pid

        await wait_until(held_by_first, 60, "the runner to take the task")
        assert first.stop(signal.SIGTERM) == 0, first.output()
        record = await store.tasks.get(task_id)
        assert record is not None and record.status == "queued" and record.attempts == 1
        pending = await store.redis.xpending(keys.TASK_STREAM, keys.RUNNER_GROUP)
        assert pending["pending"] == 0 and await store.redis.xlen(keys.TASK_STREAM) == 1

        second = processes.cli("runner-2", "runner", env=env)
        record = await final(store, task_id)
        assert record.status == "succeeded", record.error
        assert record.attempts == 2
        assert (await gw.wait_for(task_id, key))["result"]["answer"] == "4817"
        assert gw.engines.remote.calls == []  # the gateway process ran nothing
        assert second.stop() == 0, second.output()
    prompts = remote_prompts(remote_engine)
    assert len(prompts) == len(set(prompts)), prompts


POISON = {
    "protocol": "remote_only",
    "question": "What is the access code? POISON",
    "documents": [{"text": CODE_DOC}],
    "options": {"max_cost_usd": 0.5},
}


async def test_a_poison_task_that_kills_every_runner_is_failed_after_max_deliveries(
    processes: Processes,
    redis_url: str,
    store: Store,
    make_gateway: Callable[..., Any],
    tmp_path: Path,
) -> None:
    env = process_env(
        MGW_REDIS_URL=redis_url,
        MGW_DATA_DIR=str(tmp_path / "data"),
        MGW_RUNNER_HEARTBEAT_S="0.2",
        MGW_RUNNER_CONCURRENCY="1",
        MGW_RUNNER_MAX_DELIVERIES="3",
    )
    launcher = [sys.executable, "-m", "support.task_runner", "--crash-on", "POISON"]
    started = 0

    def start_runner() -> Process:
        nonlocal started
        started += 1
        return processes.start(f"runner-{started}", launcher, env)

    async with make_gateway(runner_enabled=False) as gw:
        key = await gw.new_key()
        poison = (await gw.client.post("/v1/tasks", json=POISON, headers=auth(key))).json()["id"]
        body = {**POISON, "question": "What is the access code?"}
        others = [
            (await gw.client.post("/v1/tasks", json=body, headers=auth(key))).json()["id"]
            for _ in range(3)
        ]
        runners = [start_runner(), start_runner()]
        crashes = 0

        async def all_ended() -> bool:
            # A supervisor: every runner that died is replaced (and must have crashed on purpose).
            nonlocal crashes
            for n, runner in enumerate(runners):
                if not runner.alive():
                    assert runner.popen.returncode == CRASH_EXIT_CODE, runner.output()
                    crashes += 1
                    runners[n] = start_runner()
            records = [await store.tasks.get(i) for i in (poison, *others)]
            return all(r is not None and r.status in ("succeeded", "failed") for r in records)

        await wait_until(all_ended, 120, "every task to end")
        failed = await gw.wait_for(poison, key)
        assert failed["status"] == "failed"
        assert failed["error"]["message"] == (
            "the task was started 3 times and each runner that ran it died or stalled; "
            "it is not retried again"
        )
        assert crashes == 3
        for task_id in others:
            task = await gw.wait_for(task_id, key)
            assert task["status"] == "succeeded" and task["result"]["answer"] == "4817"
            assert (await store.tasks.get(task_id)).attempts == 1  # type: ignore[union-attr]
        for runner in runners:
            # A replacement may still be starting: signal it once it runs (handlers installed).
            await asyncio.to_thread(runner.wait_for_line, "runner runner-")
            assert runner.stop() == 0, runner.output()
    assert await store.redis.xlen(keys.TASK_STREAM) == 0
    assert (await store.redis.xpending(keys.TASK_STREAM, keys.RUNNER_GROUP))["pending"] == 0
    budget = await store.api_keys.get(key.split("_")[1])
    assert budget is not None and budget.reserved_nano == 0


async def test_twenty_tasks_survive_a_worker_sigkilled_while_it_holds_jobs(
    processes: Processes,
    remote: tuple[str, ScriptedEngine],
    redis_url: str,
    store: Store,
    tmp_path: Path,
) -> None:
    """The issue's fault test: a gateway and two queue workers as processes, 20 minions tasks,
    one worker SIGKILLed while it holds a batch: its jobs are reclaimed by the other, every task
    succeeds, and each task's local jobs ran as planned (no job lost, none counted twice)."""
    remote_url, _ = remote
    env = gateway_env(redis_url, remote_url, tmp_path / "data")
    env |= {"MGW_RUNNER_CONCURRENCY": "8", "MGW_MI_ENABLED": "false"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = processes.cli("gateway", "serve", "--port", str(port), env=env)
    timing = json.dumps(dataclasses.asdict(TEST_TIMING))
    workers = {}
    for name in ("victim", "survivor"):
        command = [sys.executable, "-m", "support.queue_worker", "--redis-url", redis_url]
        command += ["--name", name, "--pool", POOL, "--batch", "4", "--delay", "0.3"]
        workers[name] = processes.start(name, [*command, "--timing", timing], process_env())
    await asyncio.to_thread(gateway.wait_ready, url)
    await wait_for_workers(store.redis, ["victim", "survivor"], POOL, timeout_s=60)

    task_ids = [await submit(url, MINIONS) for _ in range(20)]

    async def victim_holds_jobs() -> bool:
        rows: Any = await store.redis.xpending_range(
            worker_keys.job_stream(POOL), worker_keys.JOB_GROUP, "-", "+", 100, "victim"
        )
        return len(rows) > 0

    await wait_until(victim_holds_jobs, 60, "the victim worker to hold jobs")
    victim = workers["victim"]
    victim.popen.send_signal(signal.SIGKILL)
    victim.popen.wait(timeout=30)
    lost: Any = await store.redis.xpending_range(
        worker_keys.job_stream(POOL), worker_keys.JOB_GROUP, "-", "+", 100, "victim"
    )
    assert lost, "the killed worker's jobs stay pending under its name"

    records = [await final(store, task_id, timeout_s=120) for task_id in task_ids]
    assert [r.status for r in records] == ["succeeded"] * 20, [r.error for r in records]
    for record in records:
        assert record.result["answer"] == "4817"
        # one task over the three pages: three local jobs, each run and counted once
        assert record.result["usage"]["local_requests"] == 3, record.result["usage"]
    stats = await store.redis.hgetall(worker_keys.pool_stats(POOL))
    assert int(stats["enqueued"]) == 60
    assert int(stats["reclaimed"]) >= len(lost)
    assert await store.redis.xlen(worker_keys.job_stream(POOL)) == 0
    assert (await store.redis.xpending(worker_keys.job_stream(POOL), worker_keys.JOB_GROUP))[
        "pending"
    ] == 0


async def test_a_stalled_runner_whose_task_was_taken_over_settles_nothing(
    processes: Processes,
    remote: tuple[str, ScriptedEngine],
    redis_url: str,
    store: Store,
    make_gateway: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """Two runners; the one holding the task is SIGSTOPped past the reclaim time, the other takes
    the task over and finishes it, then the first is SIGCONTed: the fencing token refuses its
    end, so usage is counted once and the reservation released once."""
    remote_url, _ = remote
    env = gateway_env(redis_url, remote_url, tmp_path / "data")
    start_worker(processes, redis_url, delay_s=2.0)
    runners = [processes.cli(f"runner-{n}", "runner", env=env) for n in (1, 2)]
    async with make_gateway(runner_enabled=False, local_pool=POOL) as gw:
        key = await gw.new_key(budget_usd=5.0)
        response = await gw.client.post("/v1/tasks", json=MINIONS, headers=auth(key))
        task_id = response.json()["id"]
        for runner in runners:
            await asyncio.to_thread(runner.wait_for_line, "runner runner-")

        async def mid_flight() -> bool:
            held = await store.redis.xpending(worker_keys.job_stream(POOL), worker_keys.JOB_GROUP)
            return held["pending"] > 0 and await holder_of(store, task_id) is not None

        await wait_until(mid_flight, 60, "the task's local jobs to be in flight")
        holder = await holder_of(store, task_id)
        assert holder is not None
        stalled, _ = runners if pid_of(holder) == runners[0].pid else runners[::-1]
        stalled.popen.send_signal(signal.SIGSTOP)
        try:

            async def taken_over() -> bool:
                record = await store.tasks.get(task_id)
                return record is not None and record.attempts == 2

            await wait_until(taken_over, 60, "the other runner to take the task over")
        finally:
            stalled.popen.send_signal(signal.SIGCONT)
        record = await final(store, task_id)
        assert record.status == "succeeded", record.error

        async def stalled_run_ended() -> bool:
            # It noticed the takeover, or (without the fence) it settled the task a second time.
            api_key = await store.api_keys.get(key_id_of(key))
            assert api_key is not None
            return "another runner took it over" in stalled.output() or api_key.reserved_nano < 0

        await wait_until(stalled_run_ended, 60, "the stalled run to end")
        await asyncio.sleep(0.5)  # (its refused end is logged after the refusal)
        record = await store.tasks.get(task_id)
        assert record is not None and record.status == "succeeded"
        api_key = await store.api_keys.get(key_id_of(key))
        assert api_key is not None
        assert api_key.reserved_nano == 0  # released once (twice: negative)
        assert api_key.spent_nano == record.billed_nano > 0  # counted once, all attempts
        view = await gw.wait_for(task_id, key)
        assert view["billing"]["billed_usd"] == pytest.approx(api_key.spent_nano / 1e9)
        usage = await store.usage.report("key")
        assert usage[key_id_of(key)]["tasks"] == 1
        for runner in runners:
            assert runner.stop() == 0, runner.output()


async def test_tasks_submitted_before_the_pool_has_a_worker_wait_and_succeed(
    processes: Processes,
    remote: tuple[str, ScriptedEngine],
    redis_url: str,
    store: Store,
    tmp_path: Path,
) -> None:
    """The starting order of `docker compose up`: the gateway is up while the workers still load
    their model. Tasks submitted then wait in the queue (MGW_POOL_WAIT_S) instead of failing,
    and /ready says the pool has no live worker until one registers."""
    remote_url, _ = remote
    # The in-process kind with a pool: the gateway loads only the model's tokenizer (from the
    # converted copy the tests share), never its weights.
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / BUNDLED_MODEL).symlink_to(ensure_bundled_model(MODEL_CACHE_DIR))
    env = gateway_env(redis_url, remote_url, data_dir, MGW_POOL_WAIT_S="120")
    env |= {"MGW_LOCAL_ENGINE": "vllm", "MGW_RUNNER_CONCURRENCY": "2"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = processes.cli("gateway", "serve", "--port", str(port), env=env)

    def probe(path: str) -> httpx.Response | None:
        try:
            return httpx.get(f"{url}{path}", timeout=2)
        except httpx.HTTPError:
            return None

    await asyncio.to_thread(gateway.wait_for, lambda: probe("/health") is not None, "/health")
    not_ready = probe("/ready")
    assert not_ready is not None and not_ready.status_code == 503, gateway.output()
    assert not_ready.json()["pools"] == {POOL: 0}
    ids = [await submit(url, MINIONS) for _ in range(4)]
    await asyncio.sleep(2.0)  # longer than the old fail-fast took
    for task_id in ids:
        record = await store.tasks.get(task_id)
        assert record is not None and record.status in ("queued", "running"), record

    start_worker(processes, redis_url, delay_s=0.2)

    async def ready() -> bool:
        response = await asyncio.to_thread(probe, "/ready")
        return response is not None and response.status_code == 200

    await wait_until(ready, 60, "/ready once the worker registered")
    assert (await asyncio.to_thread(probe, "/ready")).json()["pools"] == {POOL: 1}  # type: ignore[union-attr]
    for task_id in ids:
        record = await final(store, task_id)
        assert record.status == "succeeded", record.error
        assert record.result["answer"] == "4817"
    # No model in the gateway: vLLM's native code never mapped, no engine-core child process.
    maps, children = proc_view(gateway.pid)
    assert "/vllm/" not in maps
    assert children == ""
