"""``minions-gw serve``: the HTTP gateway (uvicorn over ``gateway.app.create_app``)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
import uvicorn

from cli.common import console, fail, load_settings, private_data_dir, stop_signals_end_cleanly
from gateway.app import create_app
from service.store import EmbeddedRedis
from service.store.connection import publish_url, unpublish_url
from service.store.embedded import EmbeddedRedisError

logger = logging.getLogger(__name__)


def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default MGW_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default MGW_PORT)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    runner: Annotated[
        bool | None,
        typer.Option(
            "--runner/--no-runner",
            help="run queued tasks in this process (default MGW_RUNNER_ENABLED, true); "
            "--no-runner: HTTP only, `minions-gw runner` processes run the tasks",
        ),
    ] = None,
) -> None:
    """Serve the gateway API. On the very first start an admin key is printed, once."""
    settings = load_settings()
    updates = {
        k: v
        for k, v in {"host": host, "port": port, "runner_enabled": runner}.items()
        if v is not None
    }
    settings = settings.model_copy(update=updates)

    def announce(token: str) -> None:
        console.print(
            "[bold green]bootstrap admin key[/] (shown this once; it is stored only as a hash):",
            highlight=False,
        )
        console.print(token, highlight=False, markup=False, soft_wrap=True)
        console.file.flush()

    private_data_dir(settings.data_dir)
    embedded: EmbeddedRedis | None = None
    redis_dir = settings.data_dir / "redis"
    try:
        if settings.redis_url is None and settings.redis_sentinels is None:
            # This process owns the embedded server and records where it listens, so
            # `minions-gw worker` / `runner` on this machine (same data dir) use the same one.
            # A server left by a killed `serve` is stopped first (service.store.embedded).
            try:
                embedded = EmbeddedRedis(
                    redis_dir, maxmemory_bytes=settings.embedded_redis_maxmemory_mb * 2**20
                )
            except EmbeddedRedisError as exc:
                fail(str(exc))
            publish_url(redis_dir, embedded.url)
            logger.info("embedded Redis at %s", embedded.url)
            console.print(f"embedded Redis: {embedded.url}", highlight=False, markup=False)
            console.file.flush()
            settings = settings.model_copy(update={"redis_url": embedded.url})
        try:
            app = create_app(settings, on_bootstrap_key=announce)
        except ValueError as exc:
            fail(str(exc))
        with stop_signals_end_cleanly():
            uvicorn.run(
                app,
                host=settings.host,
                port=settings.port,
                log_level=log_level.lower(),
                timeout_graceful_shutdown=10,
                proxy_headers=False,
            )
    finally:
        if embedded is not None:
            unpublish_url(redis_dir, embedded.url)
            embedded.close()
