"""Building what runs tasks: the store, the engines and the executor, and the task runner over
them. The HTTP gateway (``gateway.app``) and the standalone runner (``minions-gw runner``) both
build it here, so a task runs the same way in either process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio.to_thread

from engines.base import Engine
from engines.prices import PriceTable
from service.engines import EngineSet, build_engine_set
from service.execution import TaskExecutor
from service.metrics import Metrics
from service.pool import EnginePool
from service.privacy import prepare_detector
from service.runner import InProcessRunner
from service.settings import Settings
from service.store import Store
from service.store.tasks import ReplicaWait


@dataclass
class Core:
    """The store, the engines and the executor of one process."""

    settings: Settings
    store: Store
    pool: EnginePool
    prices: PriceTable
    executor: TaskExecutor
    metrics: Metrics

    def runner(self) -> InProcessRunner:
        """A runner (not started) for the task queue, sized by the settings."""
        return InProcessRunner(
            self.store,
            self.executor,
            self.metrics,
            concurrency=self.settings.runner_concurrency,
            heartbeat_s=self.settings.runner_heartbeat_s,
            max_deliveries=self.settings.runner_max_deliveries,
        )


@asynccontextmanager
async def open_core(
    settings: Settings,
    metrics: Metrics,
    *,
    engines: EngineSet | None = None,
    store: Store | None = None,
    extra_remotes: dict[str, Engine] | None = None,
) -> AsyncIterator[Core]:
    """Build the core; on exit wait for background billing, then close the engines and the store.
    ``engines`` and ``store`` are built from ``settings`` when not given (and then closed); given
    ones are left open. Stop the runner before leaving, so its tasks go back to the queue first.
    """
    the_store = store
    if the_store is None:
        # Starting the embedded server blocks (it waits for redis-server to answer).
        the_store = await anyio.to_thread.run_sync(
            lambda: Store.connect(
                settings.redis_url,
                settings.data_dir,
                event_stream_maxlen=settings.event_stream_maxlen,
                sentinels=settings.sentinel_addresses(),
                sentinel_master=settings.redis_sentinel_master,
                replica_wait=ReplicaWait(
                    settings.submit_wait_replicas, settings.submit_wait_timeout_ms
                ),
            )
        )
    pool: EnginePool | None = None
    executor: TaskExecutor | None = None
    try:
        pool = EnginePool(
            engines or build_engine_set(settings),
            settings,
            extra_remotes=extra_remotes,
            owns_engines=engines is None,
        )
        prices = settings.prices()
        privacy = await prepare_detector(settings)
        executor = TaskExecutor(the_store, pool, prices, metrics, privacy)
        yield Core(settings, the_store, pool, prices, executor, metrics)
    finally:
        if executor is not None:
            await executor.drain()
        if pool is not None:
            await pool.aclose()
        if store is None:
            await the_store.aclose()
