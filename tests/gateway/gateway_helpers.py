"""Helpers for the gateway tests: scripted engines, the running app, SSE and HTTP helpers.

(Not in conftest.py: ``from conftest import ...`` would resolve to whichever conftest pytest loaded
last.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from support.scripted_engine import ScriptedEngine

from engines.base import GenerationRequest, GenerationResult
from service.engines import EngineSet
from service.services import Services
from service.store import Store

ADMIN_KEY = "test-admin-key-0123456789abcdefghijklmnop"
CODE_DOC = "The weather was mild.\fThe access code for the north warehouse is 4817.\fLunch at noon."
PLAN = json.dumps(
    {"tasks": [{"task": "Find the access code", "advice": "digits", "chunks": "all"}]}
)
MINIONS_FINAL = json.dumps({"decision": "final_answer", "answer": "4817", "scratchpad": "found"})
MINION_FINAL = json.dumps({"decision": "final_answer", "answer": "4817"})


def _prompt(request: GenerationRequest) -> str:
    return "\n".join(message.content for message in request.messages)


def local_reply(request: GenerationRequest) -> str:
    found = "4817" in _prompt(request)
    if request.json_schema is not None:
        answer = "4817" if found else None
        return json.dumps({"explanation": "read it", "citation": answer, "answer": answer})
    return "The code is 4817." if found else "NONE"


class GatedEngine(ScriptedEngine):
    """A scripted engine that hangs (cancellably) on prompts containing ``SLOW``."""

    def __init__(self, *args: Any, hang_on: str | None = "SLOW", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hang_on = hang_on
        self.started = asyncio.Event()
        self.cancelled = 0

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        hang_on = self.hang_on
        if hang_on is not None and any(hang_on in _prompt(request) for request in requests):
            self.started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return await super().generate(requests)


def scripted_engines(hang_on: str | None = "SLOW") -> EngineSet:
    local = GatedEngine(
        default=local_reply,
        model="smollm2-135m-instruct",
        context_window=8192,
        hang_on=hang_on,
    )
    remote = GatedEngine(
        [
            (r"Plan the work", PLAN),
            (r"findings this round", MINIONS_FINAL),
            (r"The colleague replied", MINION_FINAL),
            (r"Read the documents below", "4817"),
        ],
        default="What is the access code?",
        model="gpt-4o",
        context_window=16_384,
        hang_on=hang_on,
    )
    return EngineSet(local=local, remote=remote, remote_stand_in=False)


@dataclass
class Gateway:
    app: FastAPI
    client: httpx.AsyncClient
    engines: EngineSet
    store: Store

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    async def new_key(self, **body: Any) -> str:
        response = await self.client.post(
            "/v1/admin/keys", json={"name": "test", **body}, headers=auth(ADMIN_KEY)
        )
        assert response.status_code == 201, response.text
        key: str = response.json()["key"]
        return key

    async def wait_for(self, task_id: str, key: str, limit_s: float = 10.0) -> dict[str, Any]:
        """Poll until the task reaches a final status; return its view."""
        deadline = asyncio.get_running_loop().time() + limit_s
        while True:
            response = await self.client.get(f"/v1/tasks/{task_id}", headers=auth(key))
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"] in ("succeeded", "failed", "cancelled"):
                return body
            assert asyncio.get_running_loop().time() < deadline, f"task still {body['status']}"
            await asyncio.sleep(0.02)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class RunningGateway:
    def __init__(self, app: FastAPI, engines: EngineSet, store: Store) -> None:
        self.app, self.engines, self.store = app, engines, store

    async def __aenter__(self) -> Gateway:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://gateway")
        return Gateway(self.app, self._client, self.engines, self.store)

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()
        await self._lifespan.__aexit__(None, None, None)


@asynccontextmanager
async def serve_in_loop(app: FastAPI) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (random port) in this event loop; yield its URL.

    Unlike ``support.openai_server.serve_in_thread`` the server shares the test's loop, which the
    in-process vLLM engine needs (it is bound to the loop that started it)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or serving.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        serving.cancel()
        raise RuntimeError("the gateway did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=20)
