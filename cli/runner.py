"""``minions-gw runner``: run queued tasks (protocol runs) with no HTTP server, until SIGTERM.

Any number of runner processes and gateways share the task stream through one consumer group;
a gateway started with ``--no-runner`` (``MGW_RUNNER_ENABLED=false``) only serves HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Annotated

import typer

from cli.common import (
    RedisUrlOption,
    console,
    load_settings,
    private_data_dir,
    redis_url_for,
    run_async,
)
from service.assembly import open_core
from service.engines import EngineSet
from service.metrics import Metrics
from service.settings import Settings

logger = logging.getLogger(__name__)


def runner(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=256, help="tasks run at once; default MGW_RUNNER_CONCURRENCY"),
    ] = None,
    redis_url: RedisUrlOption = None,
) -> None:
    """Run queued tasks from the gateway's Redis; SIGTERM or SIGINT stops gracefully (running
    tasks go back to the queue) and exits 0."""
    settings = load_settings()
    private_data_dir(settings.data_dir)
    updates: dict[str, object] = {"redis_url": redis_url_for(settings, redis_url)}
    if concurrency is not None:
        updates["runner_concurrency"] = concurrency
    run_async(run_runner(settings.model_copy(update=updates)))


async def run_runner(settings: Settings, *, engines: EngineSet | None = None) -> None:
    """Build the store, engines and executor as the gateway does and run the task runner until
    SIGTERM/SIGINT. ``settings.redis_url`` must be set (a runner never starts its own Redis)."""
    if not settings.redis_url:
        raise ValueError("redis_url: a runner needs the gateway's Redis")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        async with open_core(settings, Metrics(), engines=engines) as core:
            if not await core.store.ping():
                raise ValueError(f"redis_url: cannot reach Redis at {settings.redis_url}")
            task_runner = core.runner()
            await task_runner.start()
            console.print(
                f"runner {task_runner.name}: concurrency {task_runner.concurrency}",
                highlight=False,
                markup=False,
            )
            console.file.flush()
            try:
                await stopping.wait()
                logger.info("stopping: running tasks go back to the queue")
            finally:
                await task_runner.stop()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
