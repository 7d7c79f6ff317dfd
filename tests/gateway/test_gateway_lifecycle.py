"""Cancellation (queued and running), and no task lost across a shutdown or a crash."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway_helpers import ADMIN_KEY, CODE_DOC, GatedEngine, Gateway, auth, scripted_engines

from service import keys
from service.store import Store

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


async def test_a_cancel_served_by_another_gateway_stops_the_run_within_a_heartbeat(
    make_gateway: Callable[..., Any],
) -> None:
    # One gateway runs tasks; another serves HTTP only (its DELETE can only flag the task).
    async with (
        make_gateway(runner_heartbeat_s=0.1) as runs,
        make_gateway(runner_enabled=False) as serves,
    ):
        key = await serves.new_key(budget_usd=5.0)
        task_id = (await serves.client.post("/v1/tasks", json=SLOW, headers=auth(key))).json()["id"]
        await runs.engines.remote.started.wait()  # running in the other gateway, hanging
        response = await serves.client.delete(f"/v1/tasks/{task_id}", headers=auth(key))
        assert response.status_code == 200 and response.json()["status"] == "running"
        for _ in range(200):
            view = (await serves.client.get(f"/v1/tasks/{task_id}", headers=auth(key))).json()
            if view["status"] != "running":
                break
            await asyncio.sleep(0.05)
        assert view["status"] == "cancelled"
        assert runs.engines.remote.cancelled == 1
        assert view["partial_usage"]["remote"]["prompt_tokens"] > 0
        record = await serves.store.api_keys.get(key.split("_")[1])
        assert record is not None and record.reserved_nano == 0


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
    # Clean shutdown: both are queued again (the interrupted one as a new stream entry), and no
    # runner holds anything.
    entries = await store.redis.xrange(keys.TASK_STREAM)
    assert sorted(fields["task"] for _, fields in entries) == sorted([running, waiting])
    assert (await store.tasks.get(running)).status == "queued"  # type: ignore[union-attr]
    pending = await store.redis.xpending(keys.TASK_STREAM, keys.RUNNER_GROUP)
    assert pending["pending"] == 0
    # The next start (engines that no longer hang) runs both to the end.
    async with make_gateway(engines=scripted_engines(hang_on=None)) as gw:
        for task_id in (running, waiting):
            task = await gw.wait_for(task_id, ADMIN_KEY)
            assert task["status"] == "succeeded"
    record = await store.api_keys.get(key.split("_")[1])
    assert record is not None and record.reserved_nano == 0


async def test_a_task_whose_runner_died_is_reclaimed_and_reuses_its_remote_replies(
    make_gateway: Callable[..., Any], store: Store, monkeypatch: Any
) -> None:
    # A first run that keeps its recorded remote replies (as a run that died would).
    monkeypatch.setattr(store.tasks, "queue_forget_checkpoints", lambda pipe, task_id: None)
    async with make_gateway(runner_concurrency=1) as gw:
        key = await gw.new_key()
        body = {**SLOW, "question": "What is the access code?"}
        task_id = (await gw.client.post("/v1/tasks", json=body, headers=auth(key))).json()["id"]
        assert (await gw.wait_for(task_id, key))["status"] == "succeeded"
        first_calls = len(gw.engines.remote.calls)
    assert first_calls > 0
    assert await store.redis.hlen(keys.task_remote_calls(task_id)) > 0
    monkeypatch.undo()
    # Simulate the runner dying mid-task: the record says running and a consumer that no longer
    # renews it holds the task's entry.
    await store.tasks.update(task_id, {"status": "running", "result": None})
    await store.redis.xadd(keys.TASK_STREAM, {"task": task_id})
    await store.redis.xreadgroup(keys.RUNNER_GROUP, "dead-runner", {keys.TASK_STREAM: ">"})
    async with make_gateway(runner_heartbeat_s=0.1) as gw:
        task = await gw.wait_for(task_id, ADMIN_KEY)
        assert task["status"] == "succeeded"
        assert gw.engines.remote.calls == []  # every remote reply was reused, none paid twice
        assert gw.services.runner.reclaimed == 1  # type: ignore[attr-defined]
    assert await store.redis.xlen(keys.TASK_STREAM) == 0
    assert not await store.redis.exists(keys.task_remote_calls(task_id))


async def test_a_runner_that_reclaims_its_own_lapsed_entry_does_not_run_the_task_twice(
    make_gateway: Callable[..., Any], monkeypatch: Any
) -> None:
    """Renewals that fail for a while (Redis unreachable) let the entry of a running task go
    idle; the runner's own sweep then claims it back. The run holding it goes on alone."""
    async with make_gateway(runner_heartbeat_s=0.1) as gw:
        runner, executor = gw.services.runner, gw.services.executor  # type: ignore[attr-defined]
        runs: list[str] = []
        execute = executor.execute

        async def counted(record: Any, *args: Any, **kwargs: Any) -> None:
            runs.append(record.id)
            await execute(record, *args, **kwargs)

        monkeypatch.setattr(executor, "execute", counted)
        key = await gw.new_key()
        task_id = (await gw.client.post("/v1/tasks", json=SLOW, headers=auth(key))).json()["id"]
        await gw.engines.remote.started.wait()  # type: ignore[attr-defined]
        xclaim = gw.store.redis.xclaim

        async def renewals_fail(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("justid"):  # the heartbeat's renewal, not the sweep's claim
                raise ConnectionError("Redis is unreachable")
            return await xclaim(*args, **kwargs)

        monkeypatch.setattr(gw.store.redis, "xclaim", renewals_fail)
        deliveries = 1
        for _ in range(100):
            pending = await gw.store.redis.xpending_range(
                keys.TASK_STREAM, keys.RUNNER_GROUP, "-", "+", 1
            )
            deliveries = int(pending[0]["times_delivered"]) if pending else 1
            if deliveries > 1:
                break
            await asyncio.sleep(0.05)
        assert deliveries > 1  # the sweep claimed the lapsed entry back
        assert runner.reclaimed == 0  # and did not hand it out: the runner holds it
        await asyncio.sleep(0.3)
        assert runs == [task_id]
        cancelled = await gw.client.delete(f"/v1/tasks/{task_id}", headers=auth(key))
        assert cancelled.json()["status"] == "cancelled"
