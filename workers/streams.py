"""What every Redis Streams consumer here shares (task runners, study consumers, job workers):
taking over one entry whose consumer died, and riding out a Redis restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

T = TypeVar("T")
# What a restarting or unreachable server raises; anything else is a real error.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class Reclaimed:
    entry_id: str
    fields: dict[str, str]
    deliveries: int  # this delivery included
    previous_owner: str
    idle_ms: int


async def reclaim_stale(
    redis: aioredis.Redis,
    stream: str,
    group: str,
    consumer: str,
    min_idle_ms: int,
    *,
    scan: int = 8,
) -> Reclaimed | None:
    """Take over one entry idle for ``min_idle_ms`` (its consumer stopped renewing it: died or
    stalled). ``XPENDING ... IDLE`` lists candidates, and ``XCLAIM`` guarded by the same min-idle
    takes one, so when consumers race for an entry exactly one wins. An entry deleted meanwhile
    is acknowledged and skipped."""
    pending: Any = await redis.xpending_range(stream, group, "-", "+", scan, idle=min_idle_ms)
    for row in pending:
        entry_id = str(row["message_id"])
        claimed: Any = await redis.xclaim(stream, group, consumer, min_idle_ms, [entry_id])
        if not claimed:
            continue  # another consumer won, or the entry is gone
        _id, fields = claimed[0]
        if not fields:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.xack(stream, group, entry_id)
                pipe.xdel(stream, entry_id)
                await pipe.execute()
            continue
        return Reclaimed(
            entry_id=entry_id,
            fields={str(k): str(v) for k, v in fields.items()},
            deliveries=int(row["times_delivered"]) + 1,
            previous_owner=str(row["consumer"]),
            idle_ms=int(row["time_since_delivered"]),
        )
    return None


async def retry_while_down(
    what: str,
    step: Callable[[], Awaitable[T]],
    *,
    stopping: Callable[[], bool],
    give_up_after_s: float,
) -> T:
    """Run a Redis step, retrying with backoff while the server is unreachable (a restart).
    Once ``stopping()`` it gives up ``give_up_after_s`` later, re-raising: what the consumer
    holds stays pending in its group, for another consumer to reclaim."""
    loop = asyncio.get_running_loop()
    give_up_at: float | None = None
    delay = 0.05
    while True:
        try:
            return await step()
        except REDIS_DOWN as exc:
            now = loop.time()
            if stopping():
                give_up_at = give_up_at or now + give_up_after_s
                if now >= give_up_at:
                    raise
            logger.warning("%s: Redis unreachable (%s); retrying in %.2fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)
