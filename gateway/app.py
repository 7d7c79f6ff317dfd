"""The FastAPI app factory: routes, error handlers and middleware over the services, which the
lifespan opens (``service.services.open_services``) and closes in order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from engines.base import Engine
from gateway.auth import AuthMiddleware, document_security
from gateway.errors import install_error_handlers
from gateway.middleware import BodyLimitMiddleware, MetricsMiddleware
from gateway.routes import (
    admin,
    analysis,
    chat,
    dashboard,
    documents,
    health,
    studies,
    summary,
    tasks,
)
from service.engines import EngineSet
from service.metrics import Metrics
from service.services import open_services
from service.settings import Settings
from service.store import Store

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
        async with open_services(
            settings,
            metrics,
            engines=engines,
            store=store,
            extra_remotes=extra_remotes,
            on_bootstrap_key=on_bootstrap_key,
        ) as services:
            app.state.services = services
            yield

    app = FastAPI(
        title="minions-gateway",
        version="0.1.0",
        summary="A small local model reads the documents; a large remote model sees compact text.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (health, tasks, documents, chat, admin, summary, studies, analysis, dashboard):
        app.include_router(module.router)
    dashboard.mount_static(app)
    document_security(app)
    # The last added runs first: metrics see every request, and a request without a valid key
    # is refused before its body is read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AuthMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
