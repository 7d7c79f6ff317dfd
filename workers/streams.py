"""The one Redis Streams consumer-group helper every consumer here uses (task runners, study
consumers, job workers): create the group, read, take over an entry whose consumer died, renew
what it holds, leave; and riding out a Redis restart.

An entry is *held* from the moment it is read or reclaimed until ``release``: while held, a
reclaim sweep of the same consumer never hands it out again (its own renewal may have lapsed
while Redis was unreachable, and the claim just renewed it), so no entry is ever run twice by
one consumer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Container, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
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
    skip: Container[str] = (),
) -> Reclaimed | None:
    """Take over one entry idle for ``min_idle_ms`` (its consumer stopped renewing it: died or
    stalled). ``XPENDING ... IDLE`` lists candidates, and ``XCLAIM`` guarded by the same min-idle
    takes one, so when consumers race for an entry exactly one wins. An entry deleted meanwhile
    is acknowledged and skipped; so is one in ``skip`` (the claim renewed it for its holder)."""
    pending: Any = await redis.xpending_range(stream, group, "-", "+", scan, idle=min_idle_ms)
    for row in pending:
        entry_id = str(row["message_id"])
        claimed: Any = await redis.xclaim(stream, group, consumer, min_idle_ms, [entry_id])
        if not claimed or entry_id in skip:
            continue  # another consumer won, the entry is gone, or we are running it
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


async def ensure_group(redis: aioredis.Redis, stream: str, group: str) -> None:
    """Create the stream and its group if missing (from id 0: nothing is skipped); only "it
    exists" (BUSYGROUP) is swallowed, every other error is raised."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry a consumer took: read fresh (``deliveries`` 1) or reclaimed."""

    entry_id: str
    fields: dict[str, str]
    deliveries: int
    reclaimed_from: str | None = None


class ConsumerGroup:
    """One consumer of one stream's consumer group (created from id 0, so nothing is skipped)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        group: str,
        consumer: str,
        *,
        reclaim_after_ms: int,
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.reclaim_after_ms = reclaim_after_ms
        self.held: set[str] = set()  # entry ids being worked on now

    async def ensure(self) -> None:
        await ensure_group(self.redis, self.stream, self.group)

    async def read(self, count: int = 1, block_ms: int | None = None) -> list[Entry]:
        """New entries for this consumer (held from now on); none when Redis lost the group,
        which is created again."""
        try:
            answer: Any = await self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            logger.warning(
                "%s had no consumer group %r (Redis lost it?); recreating", self.stream, self.group
            )
            await self.ensure()
            return []
        entries = [
            Entry(str(entry_id), {str(k): str(v) for k, v in fields.items()}, 1)
            for _stream, rows in answer or []
            for entry_id, fields in rows
        ]
        self.held.update(entry.entry_id for entry in entries)
        return entries

    async def reclaim_one(self) -> Entry | None:
        """Take over one entry idle for ``reclaim_after_ms`` (held from now on), never one this
        consumer holds."""
        found = await reclaim_stale(
            self.redis,
            self.stream,
            self.group,
            self.consumer,
            self.reclaim_after_ms,
            skip=self.held,
        )
        if found is None:
            return None
        self.held.add(found.entry_id)
        return Entry(found.entry_id, found.fields, found.deliveries, found.previous_owner)

    def release(self, entry_id: str) -> None:
        """The entry is no longer worked on here (settled, or left pending for reclaim)."""
        self.held.discard(entry_id)

    async def renew(self, entry_ids: Iterable[str] | None = None) -> None:
        """Reset the idle time of held entries (all of them by default): a heartbeat."""
        ids: list[Any] = list(self.held if entry_ids is None else entry_ids)
        if ids:
            await self.redis.xclaim(self.stream, self.group, self.consumer, 0, ids, justid=True)

    async def leave(self) -> None:
        """Drop this consumer from the group when it holds nothing pending (a crash leaves its
        entries for another consumer to reclaim)."""
        mine: Any = await self.redis.xpending_range(
            self.stream, self.group, "-", "+", 1, consumername=self.consumer
        )
        if not mine:
            await self.redis.xgroup_delconsumer(self.stream, self.group, self.consumer)
