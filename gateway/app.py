"""The FastAPI app factory. The lifespan builds the store (Redis), the engines, the services and
the task runner, and takes them down in order: the runner first (running tasks go back to the
queue), then the engines, then the store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.assembly import open_core
from gateway.auth import AuthMiddleware, document_security
from gateway.deps import Services
from gateway.documents import DocumentService
from gateway.engines import EngineSet
from gateway.errors import install_error_handlers
from gateway.metrics import Metrics
from gateway.middleware import BodyLimitMiddleware, MetricsMiddleware
from gateway.routes import admin, analysis, chat, documents, health, studies, tasks
from gateway.runner import ExternalRunners, TaskRunner
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
        runner: TaskRunner | None = None
        sidecar: StudyService | None = None
        async with open_core(
            settings, metrics, engines=engines, store=store, extra_remotes=extra_remotes
        ) as core:
            try:
                the_store, pool, executor = core.store, core.pool, core.executor
                docs = DocumentService(the_store, pool.local, settings)
                budgets = BudgetService(the_store, pool, core.prices, settings)
                # HTTP only: separate ``minions-gw runner`` processes run the queued tasks.
                runner = core.runner() if settings.runner_enabled else ExternalRunners()
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
                sidecar = StudyService.from_settings(the_store.redis, settings)
                app.state.studies = sidecar
                await sidecar.start()
                yield
            finally:
                if sidecar is not None:
                    await sidecar.stop()
                if runner is not None:
                    # Before the core closes: running tasks go back to the queue first.
                    await runner.stop()

    app = FastAPI(
        title="minions-gateway",
        version="0.1.0",
        summary="A small local model reads the documents; a large remote model sees compact text.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (health, tasks, documents, chat, admin, studies, analysis):
        app.include_router(module.router)
    document_security(app)
    # The last added runs first: metrics see every request, and a request without a valid key
    # is refused before its body is read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AuthMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
