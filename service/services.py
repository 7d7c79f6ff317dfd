"""Every service of one gateway process, built and taken down in order.

``open_services`` builds the store (Redis), the engines, the services and the task runner, and
takes them down in order: the study consumer and the runner first (running work goes back to the
queue), then the engines, then the store. The HTTP layer keeps the result on
``app.state.services`` and routes reach it through ``gateway.deps``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from engines.base import Engine
from service.admin import AdminService
from service.assembly import open_core
from service.chat import ChatService
from service.documents import DocumentService
from service.engines import EngineSet
from service.execution import TaskExecutor
from service.metrics import Metrics
from service.pool import EnginePool
from service.runner import ExternalRunners, TaskRunner
from service.schemas import Readiness
from service.settings import Settings
from service.store import Store
from service.studies import StudyService
from service.summary import SummaryService
from service.tasks import BudgetService, TaskService

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything one gateway process serves with."""

    settings: Settings
    store: Store
    pool: EnginePool
    documents: DocumentService
    budgets: BudgetService
    executor: TaskExecutor
    runner: TaskRunner
    tasks: TaskService
    studies: StudyService
    chat: ChatService
    metrics: Metrics
    summary: SummaryService
    admin: AdminService

    async def readiness(self) -> Readiness:
        """Ready when the store answers, the local engine is up, the runner is healthy and
        every configured local-model pool has a live worker (``pools`` counts them)."""
        store_ok = await self.store.ping()
        engines_ok = self.pool.local is not None
        runner_ok = self.runner.healthy
        pools: dict[str, int] = {}
        if store_ok:
            try:
                pools = await self.pool.live_workers(self.store.redis)
            except Exception:  # Redis went away since the ping: report it, never fail the probe
                logger.warning("Redis unreachable while counting live workers", exc_info=True)
                store_ok = False
        ready = store_ok and engines_ok and runner_ok and all(pools.values())
        return Readiness(
            status="ready" if ready else "not_ready",
            store=store_ok,
            engines=engines_ok,
            runner=runner_ok,
            pools=pools,
        )

    async def metrics_text(self) -> bytes:
        """The Prometheus exposition, with the queue depth read now (NaN while Redis is down:
        metrics must render even then)."""
        try:
            self.metrics.queue_depth.set(await self.store.tasks.queue_depth())
        except Exception:
            self.metrics.queue_depth.set(float("nan"))
        return self.metrics.render()


@asynccontextmanager
async def open_services(
    settings: Settings,
    metrics: Metrics,
    *,
    engines: EngineSet | None = None,
    store: Store | None = None,
    extra_remotes: dict[str, Engine] | None = None,
    on_bootstrap_key: Callable[[str], None] | None = None,
) -> AsyncIterator[Services]:
    """The services, running. ``engines`` and ``store`` are built from ``settings`` when not
    given (and then closed at the end); given ones are left open. ``on_bootstrap_key`` receives
    the admin key generated on the very first start."""
    runner: TaskRunner | None = None
    studies: StudyService | None = None
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
            studies = StudyService.from_settings(the_store.redis, settings)
            services = Services(
                settings=settings,
                store=the_store,
                pool=pool,
                documents=docs,
                budgets=budgets,
                executor=executor,
                runner=runner,
                tasks=TaskService(the_store, pool, docs, budgets, runner, settings),
                studies=studies,
                chat=ChatService(the_store, pool, docs, budgets, executor, settings),
                metrics=metrics,
                summary=SummaryService(the_store),
                admin=AdminService(the_store, studies, settings),
            )
            await runner.start()
            await studies.start()
            yield services
        finally:
            if studies is not None:
                await studies.stop()
            if runner is not None:
                # Before the core closes: running tasks go back to the queue first.
                await runner.stop()
