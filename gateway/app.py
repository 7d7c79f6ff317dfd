"""The FastAPI app factory. The lifespan builds the store (Redis), the engines, the services and
the task runner, and takes them down in order: the runner first (running tasks go back to the
queue), then the engines, then the store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI

from gateway.auth import authenticate
from gateway.deps import Services
from gateway.documents import DocumentService
from gateway.engines import EngineSet, build_engine_set
from gateway.errors import install_error_handlers
from gateway.execution import TaskExecutor
from gateway.metrics import Metrics
from gateway.middleware import BodyLimitMiddleware, MetricsMiddleware
from gateway.pool import EnginePool
from gateway.routes import admin, analysis, chat, documents, health, studies, tasks
from gateway.runner import InProcessRunner
from gateway.settings import Settings
from gateway.store import Store
from gateway.studies import StudyService
from gateway.tasks import BudgetService, TaskService
from workers.engines.base import Engine

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    engines: EngineSet | None = None,
    store: Store | None = None,
    *,
    extra_remotes: dict[str, Engine] | None = None,
    on_bootstrap_key: Callable[[str], None] | None = None,
) -> FastAPI:
    """The gateway. ``engines`` and ``store`` are built from ``settings`` when not given (and then
    closed at shutdown); given ones are left open. ``on_bootstrap_key`` receives the admin key
    generated on the very first start (``minions-gw serve`` prints it)."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        the_store = store
        if the_store is None:
            the_store = await anyio.to_thread.run_sync(
                lambda: Store.connect(
                    settings.redis_url,
                    settings.data_dir,
                    event_stream_maxlen=settings.event_stream_maxlen,
                )
            )
        pool: EnginePool | None = None
        runner: InProcessRunner | None = None
        sidecar: StudyService | None = None
        try:
            engine_set = engines or build_engine_set(settings)
            pool = EnginePool(
                engine_set, settings, extra_remotes=extra_remotes, owns_engines=engines is None
            )
            prices = settings.prices()
            docs = DocumentService(the_store, pool.local, settings)
            budgets = BudgetService(the_store, pool, prices, settings)
            executor = TaskExecutor(the_store, pool, prices, metrics)
            runner = InProcessRunner(
                the_store,
                executor,
                metrics,
                concurrency=settings.runner_concurrency,
                heartbeat_s=settings.runner_heartbeat_s,
                max_deliveries=settings.runner_max_deliveries,
            )
            admin_token = settings.admin_key.get_secret_value() if settings.admin_key else None
            generated = await the_store.api_keys.ensure_bootstrap(
                admin_token, settings.rate_limit_per_minute
            )
            if generated is not None and on_bootstrap_key is not None:
                on_bootstrap_key(generated)
            app.state.settings = settings
            app.state.store = the_store
            app.state.services = Services(
                settings=settings,
                store=the_store,
                pool=pool,
                documents=docs,
                budgets=budgets,
                executor=executor,
                runner=runner,
                tasks=TaskService(the_store, pool, docs, budgets, runner, settings),
                metrics=metrics,
            )
            await runner.start()
            sidecar = StudyService(
                the_store.redis,
                settings.data_dir,
                max_queued=settings.max_queued_studies,
                threads=settings.study_threads,
            )
            app.state.studies = sidecar
            await sidecar.start()
            yield
        finally:
            if sidecar is not None:
                await sidecar.stop()
            if runner is not None:
                await runner.stop()
                await executor.drain()
            if pool is not None:
                await pool.aclose()
            if own_store:
                await the_store.aclose()

    app = FastAPI(
        title="minions-gateway",
        version="0.1.0",
        summary="A small local model reads the documents; a large remote model sees compact text.",
        lifespan=lifespan,
        dependencies=[Depends(authenticate)],
    )
    install_error_handlers(app)
    for module in (health, tasks, documents, chat, admin, studies, analysis):
        app.include_router(module.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
