"""Cancellation (queued and running), and no task lost across a shutdown or a crash."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway_helpers import ADMIN_KEY, CODE_DOC, GatedEngine, Gateway, auth, scripted_engines

from gateway import keys
from gateway.store import Store

SLOW = {
    "protocol": "minions",
    "question": "What is the access code? SLOW",
    "documents": [{"text": CODE_DOC}],
    "options": {"chunking": "pages", "max_cost_usd": 0.5},
}


async def test_cancel_a_running_task_aborts_its_engine_work_and_bills_it(gw: Gateway) -> None:
    key = await gw.new_key(budget_usd=5.0)
    response = await gw.client.post("/v1/tasks", json=SLOW, headers=auth(key))
    task_id = response.json()["id"]
    remote = gw.engines.remote
    assert isinstance(remote, GatedEngine)
    await remote.started.wait()  # the first remote call (decompose) hangs
    cancelled = await gw.client.delete(f"/v1/tasks/{task_id}", headers=auth(key))
    assert cancelled.status_code == 200, cancelled.text
    view = cancelled.json()
    assert view["status"] == "cancelled"
    assert remote.cancelled == 1
    # The aborted remote call is billed at its prompt bound; the reservation is released.
    assert view["partial_usage"]["remote"]["prompt_tokens"] > 0
    assert view["partial_usage"]["cost_usd"] > 0
    record = await gw.store.api_keys.get(key.split("_")[1])
    assert record is not None and record.reserved_nano == 0 and record.spent_nano > 0
    again = await gw.client.delete(f"/v1/tasks/{task_id}", headers=auth(key))
    assert again.status_code == 409
    events = await gw.store.events.read(task_id)
    assert events[-1].type == "cancelled"


async def test_cancel_a_queued_task(make_gateway: Callable[..., Any]) -> None:
    async with make_gateway(runner_concurrency=1) as gw:
        key = await gw.new_key(budget_usd=5.0)
        first = (await gw.client.post("/v1/tasks", json=SLOW, headers=auth(key))).json()["id"]
        body = {**SLOW, "question": "What is the access code?"}
        queued = (await gw.client.post("/v1/tasks", json=body, headers=auth(key))).json()["id"]
        await gw.engines.remote.started.wait()
        assert (await gw.client.get(f"/v1/tasks/{queued}", headers=auth(key))).json()[
            "status"
        ] == "queued"
        response = await gw.client.delete(f"/v1/tasks/{queued}", headers=auth(key))
        assert response.json()["status"] == "cancelled"
        await gw.client.delete(f"/v1/tasks/{first}", headers=auth(key))
        record = await gw.store.api_keys.get(key.split("_")[1])
        assert record is not None and record.reserved_nano == 0


async def test_shutdown_requeues_running_tasks_and_the_next_start_finishes_them(
    make_gateway: Callable[..., Any], store: Store
) -> None:
    async with make_gateway(runner_concurrency=1) as gw:
        key = await gw.new_key(budget_usd=5.0)
        running = (await gw.client.post("/v1/tasks", json=SLOW, headers=auth(key))).json()["id"]
        body = {**SLOW, "question": "What is the access code?"}
        waiting = (await gw.client.post("/v1/tasks", json=body, headers=auth(key))).json()["id"]
        await gw.engines.remote.started.wait()
    # Clean shutdown: both are queued again, the interrupted one first.
    queue = await store.redis.lrange(keys.QUEUE, 0, -1)
    assert queue[-1] == running and waiting in queue
    assert (await store.tasks.get(running)).status == "queued"  # type: ignore[union-attr]
    assert await store.redis.llen(keys.RUNNING) == 0
    # The next start (engines that no longer hang) runs both to the end.
    async with make_gateway(engines=scripted_engines(hang_on=None)) as gw:
        for task_id in (running, waiting):
            task = await gw.wait_for(task_id, ADMIN_KEY)
            assert task["status"] == "succeeded"
    record = await store.api_keys.get(key.split("_")[1])
    assert record is not None and record.reserved_nano == 0


async def test_ids_left_running_by_a_crash_are_requeued_at_start(
    make_gateway: Callable[..., Any], store: Store
) -> None:
    async with make_gateway(runner_concurrency=1) as gw:
        key = await gw.new_key()
        body = {**SLOW, "protocol": "local_only", "question": "What is the access code?"}
        task_id = (await gw.client.post("/v1/tasks", json=body, headers=auth(key))).json()["id"]
        await gw.wait_for(task_id, key)
    # Simulate a crash mid-task: the record says running and the id sits in the running list.
    await store.tasks.update(task_id, {"status": "queued", "result": None})
    await store.redis.rpush(keys.RUNNING, task_id)
    async with make_gateway() as gw:
        task = await gw.wait_for(task_id, ADMIN_KEY)
        assert task["status"] == "succeeded"
