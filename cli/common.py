"""Helpers the subcommands share: settings, the console, running a coroutine, clear errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import redis.asyncio as aioredis
import typer
from pydantic import ValidationError
from rich.console import Console

from engines.errors import EngineConfigError, EngineError
from service.settings import Settings
from service.store.connection import client_for, find_embedded_url

# ``--redis-url`` of the commands that join a running gateway (worker, runner).
RedisUrlOption = Annotated[
    str | None,
    typer.Option(
        help="the gateway's Redis; default MGW_REDIS_URL, else the embedded one "
        "`minions-gw serve` runs for MGW_DATA_DIR"
    ),
]

T = TypeVar("T")
logger = logging.getLogger(__name__)
console = Console()
errors = Console(stderr=True)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        fail(f"invalid settings: {describe_validation_error(exc)}")


def fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming its field: ``max_tokens: Input should be > 0``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'input'}: {error['msg']}"
        for error in exc.errors()
    )


def validated(build: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a pydantic constructor; a validation error becomes one clear line and exit 2."""
    try:
        return build(*args, **kwargs)
    except ValidationError as exc:
        fail(describe_validation_error(exc), code=2)


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine``; engine and input errors become one clear line instead of a traceback."""
    try:
        return asyncio.run(coroutine)
    except (EngineError, EngineConfigError, ValueError) as exc:
        fail(str(exc))


def private_data_dir(data_dir: Path) -> None:
    """The data dir holds every tenant's documents (the AOF), keys' hashes and models: owner-only.
    Everything this process creates from now on is owner-only too (umask 077)."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)


@contextlib.contextmanager
def stop_signals_end_cleanly() -> Iterator[None]:
    """SIGTERM and SIGINT, once the server inside has shut down gracefully, end the command with
    status 0 and its cleanup run.

    uvicorn handles both signals itself, then restores the previous handlers and raises the signal
    again "to trigger the expected behaviour": with the default SIGTERM handler that kills the
    process on the spot (exit 143), skipping every ``finally`` (the embedded Redis was left
    running). The handlers installed here make that re-raise a no-op; uvicorn replaces them while
    it runs, so its own graceful shutdown is unchanged."""
    received: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: received.append(signum))
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            logger.info("stopped by signal %d", received[0])


def redis_url_for(settings: Settings, explicit: str | None = None) -> str:
    """The Redis a worker or runner uses: ``explicit``, else ``MGW_REDIS_URL``, else the embedded
    server ``minions-gw serve`` runs for this data dir (never a second private one)."""
    url = explicit or settings.redis_url
    if url:
        return url
    if settings.redis_sentinels is not None:
        return "redis://"  # the Sentinels name the server; the URL would add a db or password
    try:
        return find_embedded_url(settings.data_dir / "redis")
    except LookupError as exc:
        fail(str(exc), code=2)


def redis_client_for(settings: Settings, url: str) -> aioredis.Redis:
    """A client of ``url``, or of the primary ``MGW_REDIS_SENTINELS`` name when set."""
    return client_for(
        url, sentinels=settings.sentinel_addresses(), sentinel_master=settings.redis_sentinel_master
    )
