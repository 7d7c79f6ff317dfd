"""The gateway's state, all in Redis: tasks and their queue, documents, event streams,
idempotency keys, API keys, budgets, rate limits and usage. Key names: ``workers.keys``."""

from __future__ import annotations

import logging
from pathlib import Path

import redis.asyncio as aioredis

from service.store.api_keys import ApiKey, ApiKeyStore, Reservation
from service.store.bench_runs import BenchRunStore
from service.store.connection import EmbeddedRedis, client_for, find_embedded_url
from service.store.documents import DocumentStore, StoredDocument
from service.store.embedded import DEFAULT_MAXMEMORY_BYTES, owner_alive
from service.store.events import Event, EventStore
from service.store.multiplexed import MultiplexedConnection
from service.store.summary import SummaryStore
from service.store.tasks import (
    NO_REPLICA_WAIT,
    TERMINAL,
    ReplicaWait,
    TaskRecord,
    TaskStore,
    new_task_id,
)
from service.store.usage import UsageStore

logger = logging.getLogger(__name__)


class Store:
    """One Redis connection pool and the typed stores over it, plus one multiplexed connection
    for the commands on the request path: task admission and rate-limit leases
    (``service.store.multiplexed``)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        embedded: EmbeddedRedis | None = None,
        event_stream_maxlen: int = 10_000,
        replica_wait: ReplicaWait = NO_REPLICA_WAIT,
    ) -> None:
        self.redis = redis
        self.embedded = embedded
        self.multiplexed = MultiplexedConnection.for_client(redis)
        self.api_keys = ApiKeyStore(redis, self.multiplexed)
        self.tasks = TaskStore(redis, self.multiplexed, replica_wait=replica_wait)
        self.documents = DocumentStore(redis)
        self.events = EventStore(redis, maxlen=event_stream_maxlen)
        self.usage = UsageStore(redis)
        self.summary = SummaryStore(redis)
        self.bench_runs = BenchRunStore(redis)

    @classmethod
    def connect(
        cls,
        redis_url: str | None,
        data_dir: Path,
        *,
        event_stream_maxlen: int = 10_000,
        maxmemory_bytes: int = DEFAULT_MAXMEMORY_BYTES,
        sentinels: list[tuple[str, int]] | None = None,
        sentinel_master: str = "mymaster",
        replica_wait: ReplicaWait = NO_REPLICA_WAIT,
    ) -> Store:
        """An external Redis at ``redis_url`` (or the primary of ``sentinels``), or the embedded
        server of ``data_dir/redis``: the one a live ``minions-gw serve`` runs there (used, not
        owned), else a new one owned here."""
        if redis_url or sentinels:
            client = client_for(
                redis_url or "redis://", sentinels=sentinels, sentinel_master=sentinel_master
            )
            return cls(client, event_stream_maxlen=event_stream_maxlen, replica_wait=replica_wait)
        directory = data_dir / "redis"
        if owner_alive(directory):
            url = find_embedded_url(directory)
            return cls(client_for(url), event_stream_maxlen=event_stream_maxlen)
        embedded = EmbeddedRedis(directory, maxmemory_bytes=maxmemory_bytes)
        return cls(
            client_for(embedded.url), embedded=embedded, event_stream_maxlen=event_stream_maxlen
        )

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:
            logger.warning("Redis is not reachable", exc_info=True)
            return False

    async def aclose(self) -> None:
        if self.multiplexed is not None:
            await self.multiplexed.aclose()
        await self.redis.aclose()
        if self.embedded is not None:
            self.embedded.close()


__all__ = [
    "TERMINAL",
    "ApiKey",
    "ApiKeyStore",
    "BenchRunStore",
    "DocumentStore",
    "EmbeddedRedis",
    "Event",
    "EventStore",
    "Reservation",
    "Store",
    "StoredDocument",
    "SummaryStore",
    "TaskRecord",
    "TaskStore",
    "UsageStore",
    "new_task_id",
]
