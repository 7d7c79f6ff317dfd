"""A task submitted over HTTP survives a restart of Redis (AOF on) while it runs: the server goes
down with the task's remote call in flight and comes back on the same files; the task then
completes and its record, events and usage are all there."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from gateway_helpers import ADMIN_KEY, CODE_DOC, RunningGateway, auth, scripted_engines
from support.redis_queue import EmbeddedRedisServer
from support.scripted_engine import ScriptedEngine

from engines.base import GenerationRequest, GenerationResult
from gateway.app import create_app
from service.engines import EngineSet
from service.settings import Settings
from service.store import Store
from service.store.connection import client_for


class HeldEngine(ScriptedEngine):
    """The scripted remote, whose calls wait until ``release`` is set."""

    def __init__(self, inner: ScriptedEngine) -> None:
        super().__init__(
            inner.rules,
            default=inner.default,
            model=inner.model,
            context_window=inner.context_window,
        )
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.waiting.set()
        await self.release.wait()
        return await super().generate(requests)


async def test_a_running_task_completes_across_a_redis_restart(
    embedded_redis: EmbeddedRedisServer, make_settings: Callable[..., Settings]
) -> None:
    scripted = scripted_engines(hang_on=None)
    assert isinstance(scripted.remote, ScriptedEngine)
    remote = HeldEngine(scripted.remote)
    engines = EngineSet(local=scripted.local, remote=remote, remote_stand_in=False)
    store = Store(client_for(embedded_redis.url))
    settings = make_settings(admin_key=ADMIN_KEY, runner_heartbeat_s=0.2)
    app = create_app(settings, engines=engines, store=store)
    body: dict[str, Any] = {
        "protocol": "minions",
        "question": "What is the access code?",
        "documents": [{"text": CODE_DOC}],
        "options": {"chunking": "pages"},
    }
    try:
        async with RunningGateway(app, engines, store) as gw:
            key = await gw.new_key()
            response = await gw.client.post("/v1/tasks", json=body, headers=auth(key))
            assert response.status_code == 202, response.text
            task_id = response.json()["id"]
            await asyncio.wait_for(remote.waiting.wait(), 10)  # the plan call is in flight

            await asyncio.to_thread(embedded_redis.stop)
            await asyncio.sleep(1.0)  # down across several runner heartbeats
            # Meanwhile a submit is refused as unavailable, in the envelope, and leaves nothing.
            down = await gw.client.post("/v1/tasks", json=body, headers=auth(key))
            assert down.status_code == 503, down.text
            assert down.json()["error"]["type"] == "unavailable"
            await asyncio.to_thread(embedded_redis.start)
            remote.release.set()

            view = await gw.wait_for(task_id, key, limit_s=30)
            assert view["status"] == "succeeded", view["error"]
            # A submit after the restart reconnects; the restarted server's script cache is empty.
            again = await gw.client.post("/v1/tasks", json=body, headers=auth(key))
            assert again.status_code == 202, again.text
            second = await gw.wait_for(again.json()["id"], key, limit_s=30)
            assert second["status"] == "succeeded", second["error"]
            listed = await gw.client.get("/v1/tasks", headers=auth(key))
            assert [task["id"] for task in listed.json()["data"]] == [second["id"], task_id]
            assert view["result"]["answer"] == "4817"
            events = [event.type for event in await store.events.read(task_id)]
            assert events[:2] == ["baseline", "round_started"] and events[-1] == "final"
            usage = await gw.client.get("/v1/admin/usage?by=protocol", headers=auth(ADMIN_KEY))
            assert usage.status_code == 200, usage.text
            assert usage.json()["data"]["minions"]["tasks"] == 2, usage.json()
            assert await store.redis.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        await store.aclose()
