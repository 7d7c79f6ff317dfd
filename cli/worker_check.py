"""``minions-gw worker-check``: a container's health check. Exit 0 while a worker started on this
host (this container) is registered in its pool, i.e. its heartbeat is live; 1 otherwise."""

from __future__ import annotations

import socket
from typing import Annotated

import typer
from redis.exceptions import RedisError

from cli.common import (
    RedisUrlOption,
    console,
    load_settings,
    redis_client_for,
    redis_url_for,
    run_async,
)
from workers.queue import live_workers


def worker_check(
    pool: Annotated[
        str, typer.Option(envvar="MGW_WORKER_POOL", help="the pool the worker serves")
    ] = "default",
    redis_url: RedisUrlOption = None,
) -> None:
    """Exit 0 when a live worker of POOL runs on this host (its registration names the host)."""
    settings = load_settings()
    url = redis_url_for(settings, redis_url)
    host = socket.gethostname()

    async def check() -> list[str]:
        client = redis_client_for(settings, url)
        try:
            workers = await live_workers(client, pool)
        finally:
            await client.aclose()
        return [name for name, info in workers.items() if info.get("host") == host]

    try:
        mine = run_async(check())
    except (RedisError, OSError) as exc:
        console.print(f"worker-check: Redis unreachable: {exc}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    if not mine:
        console.print(f"worker-check: no live worker of pool {pool!r} on {host}", highlight=False)
        raise typer.Exit(1)
    console.print(f"worker-check: {', '.join(sorted(mine))}", highlight=False, markup=False)
