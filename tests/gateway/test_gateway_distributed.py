"""The gateway on the distributed queue: backpressure on the task stream, the workers endpoint,
and local-model calls run by queue workers (``MGW_LOCAL_POOL``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway_helpers import ADMIN_KEY, CODE_DOC, auth, scripted_engines
from support.redis_queue import TEST_TIMING, wait_for_workers

from service.store import Store
from workers import keys
from workers.worker import Worker

BODY = {
    "protocol": "minions",
    "question": "What is the access code?",
    "documents": [{"text": CODE_DOC}],
    "options": {"chunking": "pages", "max_cost_usd": 0.5},
}


async def test_a_full_queue_answers_429_until_it_drains(make_gateway: Callable[..., Any]) -> None:
    async with make_gateway(engines=scripted_engines(hang_on=None), max_queued_tasks=2) as gw:
        key = await gw.new_key()
        await gw.services.runner.stop()  # nothing takes tasks: they pile up
        ids = [
            (await gw.client.post("/v1/tasks", json=BODY, headers=auth(key))).json()["id"]
            for _ in range(2)
        ]
        refused = await gw.client.post("/v1/tasks", json=BODY, headers=auth(key))
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "5"
        assert refused.json()["error"]["type"] == "queue_full"
        assert "queue is full" in refused.json()["error"]["message"]
        await gw.services.runner.start()
        for task_id in ids:
            assert (await gw.wait_for(task_id, key))["status"] == "succeeded"
        accepted = await gw.client.post("/v1/tasks", json=BODY, headers=auth(key))
        assert accepted.status_code == 202, accepted.text


async def test_local_calls_run_on_queue_workers_of_the_pool(
    make_gateway: Callable[..., Any], store: Store
) -> None:
    engines = scripted_engines(hang_on=None)
    async with make_gateway(engines=engines, local_pool="gw-test", pool_wait_s=0.5) as gw:
        key = await gw.new_key()
        # No live worker: the task waits MGW_POOL_WAIT_S for one, then fails with a clear error.
        lonely = (await gw.client.post("/v1/tasks", json=BODY, headers=auth(key))).json()["id"]
        failed = await gw.wait_for(lonely, key)
        assert failed["status"] == "failed"
        message = failed["error"]["message"]
        assert "no live worker serves local-model pool 'gw-test' (waited 0.5 s" in message

        worker = Worker(store.redis, engines.local, pool="gw-test", batch=8, timing=TEST_TIMING)
        running = asyncio.create_task(worker.run())
        try:
            await wait_for_workers(store.redis, [worker.name], "gw-test")
            task_id = (await gw.client.post("/v1/tasks", json=BODY, headers=auth(key))).json()["id"]
            task = await gw.wait_for(task_id, key)
            assert task["status"] == "succeeded", task
            assert task["result"]["answer"] == "4817"
            stats = await store.redis.hgetall(keys.pool_stats("gw-test"))
            assert int(stats["completed"]) > 0
            # The task's local results are dropped once it ended.
            assert not await store.redis.exists(keys.job_results(task_id))
            # Its mutual information is scored in the background by the pool's workers too.
            for _ in range(500):
                record = await store.tasks.get(task_id)
                if record is not None and record.mi and record.mi["status"] != "pending":
                    break
                await asyncio.sleep(0.02)
            assert record is not None and record.mi is not None
            assert record.mi["status"] == "succeeded", record.mi
            assert record.mi["scorer"].startswith("engine-queued:")
            assert not await store.redis.exists(keys.job_results(f"{task_id}.mi"))

            listing = await gw.client.get("/v1/admin/workers", headers=auth(ADMIN_KEY))
            assert listing.status_code == 200, listing.text
            report = listing.json()
            assert report["local_pool"] == "gw-test" and report["tasks_waiting"] == 0
            (pool,) = [p for p in report["pools"] if p["pool"] == "gw-test"]
            assert [w["name"] for w in pool["workers"]] == [worker.name]
            assert pool["queued"] == 0 and pool["dead_lettered"] == 0
            forbidden = await gw.client.get("/v1/admin/workers", headers=auth(key))
            assert forbidden.status_code == 403
        finally:
            worker.stop()
            await asyncio.wait_for(running, timeout=10)


async def test_a_task_submitted_before_any_worker_waits_for_one(
    make_gateway: Callable[..., Any], store: Store
) -> None:
    engines = scripted_engines(hang_on=None)
    async with make_gateway(engines=engines, local_pool="gw-late", pool_wait_s=30) as gw:
        key = await gw.new_key()
        not_ready = await gw.client.get("/ready")
        assert not_ready.status_code == 503
        assert not_ready.json()["pools"] == {"gw-late": 0}
        ids = [
            (await gw.client.post("/v1/tasks", json=BODY, headers=auth(key))).json()["id"]
            for _ in range(3)
        ]
        await asyncio.sleep(1.5)  # the runner holds them, waiting for the pool
        for task_id in ids:
            assert (await store.tasks.get(task_id)).status in ("queued", "running")  # type: ignore[union-attr]
        worker = Worker(store.redis, engines.local, pool="gw-late", batch=8, timing=TEST_TIMING)
        running = asyncio.create_task(worker.run())
        try:
            await wait_for_workers(store.redis, [worker.name], "gw-late")
            ready = await gw.client.get("/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["pools"] == {"gw-late": 1}
            for task_id in ids:
                task = await gw.wait_for(task_id, key, limit_s=20)
                assert task["status"] == "succeeded", task
        finally:
            worker.stop()
            await asyncio.wait_for(running, timeout=10)
