"""``minions-gw worker`` and ``minions-gw runner`` on the machine of a ``minions-gw serve`` that
started the embedded Redis (no ``MGW_REDIS_URL``, same data dir) use that server, and fail
clearly when none runs instead of starting a private one."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from gateway_helpers import ADMIN_KEY, auth
from support.openai_server import FaultPlan, build_app, serve_in_thread
from support.processes import Processes, free_port, process_env
from support.redis_queue import wait_for_workers, wait_until
from support.scripted_engine import ScriptedEngine

from service.store.connection import URL_FILE

pytestmark = pytest.mark.slow

# Engines only contacted on use: nothing here runs a model.
ENGINES = {"MGW_LOCAL_ENGINE": "openai", "MGW_LOCAL_BASE_URL": "http://127.0.0.1:9/v1"}
WORKER = ["worker", "--engine", "openai", "--model", "m", "--pool", "shared"]


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.close()


async def test_workers_and_runners_find_the_embedded_redis_of_serve(
    processes: Processes, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    local = ScriptedEngine(default="4817")
    with serve_in_thread(build_app(local, FaultPlan())) as local_url:
        env = process_env(
            MGW_DATA_DIR=str(data_dir),
            MGW_ADMIN_KEY=ADMIN_KEY,
            MGW_LOCAL_ENGINE="openai",
            MGW_LOCAL_BASE_URL=f"{local_url}/v1",
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        # HTTP only: the runner process must run the task, through the same Redis.
        gateway = processes.cli("serve", "serve", "--port", str(port), "--no-runner", env=env)
        await asyncio.to_thread(gateway.wait_ready, base)
        url_file = data_dir / "redis" / URL_FILE
        url = url_file.read_text().strip()
        assert url.startswith("unix://")
        assert f"embedded Redis: {url}" in gateway.output()

        worker = processes.cli("worker", *WORKER, "--name", "shared-worker", env=env)
        runner = processes.cli("runner", "runner", env=env)
        client = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            await wait_for_workers(client, ["shared-worker"], "shared", timeout_s=90)
            await asyncio.to_thread(runner.wait_for_line, "runner runner-")
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                made = await http.post(
                    "/v1/admin/keys", json={"name": "t"}, headers=auth(ADMIN_KEY)
                )
                key = made.json()["key"]
                body = {"protocol": "local_only", "question": "Code?", "documents": [{"text": "x"}]}
                posted = await http.post("/v1/tasks", json=body, headers=auth(key))
                assert posted.status_code == 202, posted.text
                task_id = posted.json()["id"]

                async def ended() -> bool:
                    view = await http.get(f"/v1/tasks/{task_id}", headers=auth(key))
                    return view.json()["status"] in ("succeeded", "failed")

                await wait_until(ended, 60, "the runner to run the task")
                view = (await http.get(f"/v1/tasks/{task_id}", headers=auth(key))).json()
                assert view["status"] == "succeeded", view
                assert view["result"]["answer"] == "4817"
            assert worker.stop() == 0, worker.output()
            assert runner.stop() == 0, runner.output()
        finally:
            await client.aclose()
        gateway.stop(signal.SIGINT)
    assert not url_file.exists()  # serve withdraws the address with its server


def test_without_a_running_serve_they_fail_clearly(processes: Processes, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = process_env(MGW_DATA_DIR=str(data_dir), **ENGINES)
    for name, args in (("worker", WORKER), ("runner", ["runner"])):
        process = processes.cli(f"lonely-{name}", *args, env=env)
        assert process.popen.wait(timeout=90) == 2, process.output()
        message = " ".join(process.output().split())
        assert "no embedded Redis runs for data dir" in message, message
        assert "start `minions-gw serve` with the same MGW_DATA_DIR first" in message
    # A stale address (its server is gone) is refused too, not replaced by a new server.
    (data_dir / "redis").mkdir(parents=True)
    stale = f"unix://{tmp_path / 'gone.sock'}"
    (data_dir / "redis" / URL_FILE).write_text(stale + "\n")
    process = processes.cli("stale-runner", "runner", env=env)
    assert process.popen.wait(timeout=90) == 2, process.output()
    message = " ".join(process.output().split())
    assert "the `minions-gw serve` that ran the embedded Redis recorded in" in message, message
    assert "is gone" in message, message
    assert not list((data_dir / "redis").glob("*.rdb"))
