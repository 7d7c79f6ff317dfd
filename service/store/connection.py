"""Connecting to Redis: an external server (``MGW_REDIS_URL``) or the embedded one.

The embedded server (``service.store.embedded``) is a private redis-server on a unix socket, with
its data in the gateway's data dir (AOF on, ``appendfsync everysec``), owned by one process at a
time. Both are used through the same ``redis.asyncio`` client, so there is one code path.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import RedisError

from service.store.embedded import EmbeddedRedis, owner_alive

logger = logging.getLogger(__name__)

__all__ = ["EmbeddedRedis", "client_for", "find_embedded_url", "publish_url", "unpublish_url"]

# Written by ``minions-gw serve`` next to the embedded server's files (``<data dir>/redis``), so
# workers and runners on the same machine and data dir find that server instead of starting one.
URL_FILE = "redis.url"


def publish_url(directory: Path, url: str) -> Path:
    """Record ``url`` as the embedded server's address (owner-only: it names a local socket)."""
    path = directory / URL_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(url + "\n", encoding="utf-8")
    temporary.chmod(0o600)
    temporary.replace(path)  # atomic: a reader never sees half a URL
    return path


def unpublish_url(directory: Path, url: str) -> None:
    """Remove the record, unless another server has replaced it meanwhile."""
    path = directory / URL_FILE
    try:
        if path.read_text(encoding="utf-8").strip() == url:
            path.unlink()
    except OSError:
        logger.debug("no embedded Redis URL to remove at %s", path, exc_info=True)


def find_embedded_url(directory: Path) -> str:
    """The URL of the embedded server ``minions-gw serve`` runs for this data dir, checked to
    answer. Raises ``LookupError`` with a clear message when none is running."""
    path = directory / URL_FILE
    hint = (
        "start `minions-gw serve` with the same MGW_DATA_DIR first, or set MGW_REDIS_URL or "
        "pass --redis-url (redis://host:6379/0, or unix:///path/to/redis.sock)"
    )
    try:
        url = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise LookupError(
            f"redis_url: MGW_REDIS_URL is not set and no embedded Redis runs for data dir "
            f"{directory.parent} (no {path}): {hint}"
        ) from None
    if not owner_alive(directory):
        # A record left by a `serve` that was killed: its server (if still up) is an orphan that
        # the next `serve` stops; attaching to it would lose work at that moment.
        raise LookupError(
            f"redis_url: MGW_REDIS_URL is not set and the `minions-gw serve` that ran the embedded "
            f"Redis recorded in {path} is gone: {hint}"
        )
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        raise LookupError(
            f"redis_url: MGW_REDIS_URL is not set and the embedded Redis recorded in {path} "
            f"({url}) does not answer ({exc}); is `minions-gw serve` still running? {hint}"
        ) from None
    finally:
        client.close()
    return url


MAX_CONNECTIONS = 512


def client_for(
    url: str,
    max_connections: int = MAX_CONNECTIONS,
    *,
    sentinels: list[tuple[str, int]] | None = None,
    sentinel_master: str = "mymaster",
) -> aioredis.Redis:
    """A client of the Redis at ``url``, or (``sentinels``) of the primary the Sentinels name
    ``sentinel_master``, found again after a failover; ``url`` then gives only the database,
    user and password."""
    # A blocking pool: past ``max_connections`` busy connections a command waits for one to be
    # free (redis-py's default pool raises ``MaxConnectionsError`` at 100 concurrent commands,
    # which a burst of requests or event followers reaches). Blocking reads (XREAD BLOCK, BLMOVE)
    # wait at most a few seconds, well under the socket timeout.
    options: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": 30,
        "decode_responses": True,
        "health_check_interval": 30,
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
    }
    if sentinels:
        return _sentinel_client(url, sentinels, sentinel_master, options)
    pool = aioredis.BlockingConnectionPool.from_url(url, **options)
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes both


class BlockingSentinelConnectionPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """redis-py's Sentinel pool (connections go to the current primary) with the blocking
    pool's waiting for a free connection; closing it also closes the Sentinel clients."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        for sentinel in self.sentinel_manager.sentinels:
            await sentinel.aclose()


def _sentinel_client(
    url: str, sentinels: list[tuple[str, int]], master: str, options: dict[str, Any]
) -> aioredis.Redis:
    from redis.asyncio.connection import parse_url

    # Only what identifies the database and its user: the host comes from the Sentinels.
    target = {k: v for k, v in parse_url(url).items() if k in ("db", "username", "password")}
    manager = Sentinel(  # type: ignore[no-untyped-call]
        sentinels,
        # A dead Sentinel must not stall discovery for the command timeout.
        sentinel_kwargs={"socket_timeout": 2, "socket_connect_timeout": 2},
        **target,
    )
    client: aioredis.Redis = manager.master_for(
        master, connection_pool_class=BlockingSentinelConnectionPool, **options
    )
    return client
