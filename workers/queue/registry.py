"""The worker registry: who serves which pool, and whether they are alive.

A worker's registration is a hash whose TTL is its heartbeat: it re-sets the hash and the TTL
every ``heartbeat_ttl_s / 3``. A worker is alive while its hash exists; Redis expires it, so
clocks of different machines never need to agree.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from engines.base import Engine
from workers import keys
from workers.streams import REDIS_DOWN

logger = logging.getLogger(__name__)


def default_worker_name(pool: str) -> str:
    return f"{pool}@{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def registration(engine: Engine, pool: str, batch: int) -> dict[str, str]:
    info = engine.describe()
    return {
        "pool": pool,
        "engine": str(info["kind"]),
        "model": engine.model,
        "context_window": str(engine.context_window),
        "batch": str(batch),
        "json_schema": str(int(engine.supports_json_schema)),
        "score": str(int(engine.supports_score)),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "started_at": f"{time.time():.3f}",
    }


async def heartbeat(redis: aioredis.Redis, name: str, info: dict[str, str], ttl_s: float) -> None:
    """Register (or refresh) worker ``name``; the registration lives ``ttl_s`` unless renewed."""
    pool = info["pool"]
    async with redis.pipeline(transaction=True) as pipe:
        mapping: dict[Any, Any] = {**info, "heartbeat_at": f"{time.time():.3f}"}
        pipe.hset(keys.worker(name), mapping=mapping)
        pipe.pexpire(keys.worker(name), math.ceil(ttl_s * 1000))
        pipe.sadd(keys.pool_workers(pool), name)
        pipe.sadd(keys.POOLS, pool)
        await pipe.execute()


async def deregister(redis: aioredis.Redis, name: str, pool: str) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.worker(name))
        pipe.srem(keys.pool_workers(pool), name)
        await pipe.execute()


async def alive(redis: aioredis.Redis, names: list[str]) -> set[str]:
    """The subset of worker ``names`` whose heartbeat has not expired."""
    if not names:
        return set()
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(keys.worker(name))
        flags = await pipe.execute()
    return {name for name, flag in zip(names, flags, strict=True) if flag}


async def live_workers(redis: aioredis.Redis, pool: str) -> dict[str, dict[str, str]]:
    """Registration of every live worker of ``pool``; the dead are dropped from the pool's set."""
    members: Any = await redis.smembers(keys.pool_workers(pool))
    names = sorted(members)
    if not names:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.worker(name))
        infos: list[dict[str, str]] = await pipe.execute()
    dead = [name for name, info in zip(names, infos, strict=True) if not info]
    if dead:
        await redis.srem(keys.pool_workers(pool), *dead)
    return {name: info for name, info in zip(names, infos, strict=True) if info}


async def wait_for_live_worker(
    redis: aioredis.Redis, pool: str, wait_s: float, poll_s: float = 1.0
) -> bool:
    """Whether ``pool`` has a live worker, waiting up to ``wait_s`` for one to register (a
    worker loading its model registers only once it can serve). Redis being unreachable for a
    moment (a restart, a Sentinel failover) counts as no worker yet, until the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    announced = False
    while True:
        try:
            if await live_workers(redis, pool):
                return True
        except REDIS_DOWN as exc:
            if loop.time() >= deadline:
                raise
            logger.warning("pool %r: Redis unreachable while waiting for a worker (%s)", pool, exc)
        if loop.time() >= deadline:
            return False
        if not announced:
            logger.info("pool %r has no live worker yet; waiting up to %.0f s", pool, wait_s)
            announced = True
        await asyncio.sleep(min(poll_s, max(0.0, deadline - loop.time())))


@dataclass(frozen=True, slots=True)
class PoolDepth:
    pool: str
    queued: int  # entries in the stream: waiting or held (XLEN; processed ones are deleted)
    held: int  # delivered to a worker, not yet acknowledged (XPENDING)
    dead_lettered: int  # entries in the dead-letter stream
    workers: dict[str, dict[str, str]]
    stats: dict[str, str]

    @property
    def waiting(self) -> int:
        return max(0, self.queued - self.held)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "queued": self.queued,
            "held": self.held,
            "waiting": self.waiting,
            "dead_lettered": self.dead_lettered,
            "workers": [{"name": name, **info} for name, info in sorted(self.workers.items())],
            "stats": self.stats,
        }


async def pool_depth(redis: aioredis.Redis, pool: str) -> PoolDepth:
    """Queue depth and live workers of one pool (for ``GET /v1/admin/workers`` and metrics)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(keys.job_stream(pool))
        pipe.xlen(keys.dead_letter_stream(pool))
        pipe.hgetall(keys.pool_stats(pool))
        queued, dead, stats = await pipe.execute()
    try:
        summary = await redis.xpending(keys.job_stream(pool), keys.JOB_GROUP)
        held = int(summary["pending"])
    except ResponseError:  # no group yet: no worker ever started for this pool
        held = 0
    return PoolDepth(pool, int(queued), held, int(dead), await live_workers(redis, pool), stats)


async def all_pools(redis: aioredis.Redis) -> list[PoolDepth]:
    pools: Any = await redis.smembers(keys.POOLS)
    return [await pool_depth(redis, pool) for pool in sorted(pools)]
