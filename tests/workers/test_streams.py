"""The one consumer-group helper (``workers.streams.ConsumerGroup``), against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from workers.streams import ConsumerGroup

STREAM, GROUP = "mgw:test:stream", "test-group"


def consumer(redis: aioredis.Redis, name: str, reclaim_after_ms: int = 50) -> ConsumerGroup:
    return ConsumerGroup(redis, STREAM, GROUP, name, reclaim_after_ms=reclaim_after_ms)


async def test_read_reclaim_and_leave(redis: aioredis.Redis) -> None:
    first, second = consumer(redis, "first"), consumer(redis, "second")
    await first.ensure()
    await first.ensure()  # BUSYGROUP: it exists, nothing raised
    entry_id = await redis.xadd(STREAM, {"task": "t1"})
    [entry] = await first.read(count=10)
    assert (entry.entry_id, entry.fields, entry.deliveries) == (entry_id, {"task": "t1"}, 1)
    assert first.held == {entry_id}
    await asyncio.sleep(0.08)
    # ``first`` stopped renewing it (died): ``second`` takes it over.
    reclaimed = await second.reclaim_one()
    assert reclaimed is not None
    assert (reclaimed.entry_id, reclaimed.deliveries, reclaimed.reclaimed_from) == (
        entry_id,
        2,
        "first",
    )
    await first.leave()  # holds nothing pending any more: removed from the group
    await second.leave()  # still holds the entry: stays, so it can be reclaimed from it
    names = {row["name"] for row in await redis.xinfo_consumers(STREAM, GROUP)}
    assert names == {"second"}


async def test_an_entry_its_own_consumer_holds_is_never_handed_out_again(
    redis: aioredis.Redis,
) -> None:
    group = consumer(redis, "runner")
    await group.ensure()
    await redis.xadd(STREAM, {"task": "t1"})
    [entry] = await group.read()
    await asyncio.sleep(0.08)  # its renewal lapsed (Redis was unreachable for a while)
    assert await group.reclaim_one() is None  # the run holding it goes on
    group.release(entry.entry_id)
    await asyncio.sleep(0.08)
    again = await group.reclaim_one()  # released but never acknowledged: it is lost work
    assert again is not None and again.entry_id == entry.entry_id


async def test_renew_keeps_a_held_entry_from_other_consumers(redis: aioredis.Redis) -> None:
    holder, other = consumer(redis, "holder", 200), consumer(redis, "other", 200)
    await holder.ensure()
    await redis.xadd(STREAM, {"task": "t1"})
    await holder.read()
    for _ in range(4):
        await asyncio.sleep(0.1)
        await holder.renew()
    assert await other.reclaim_one() is None


async def test_a_lost_group_is_created_again_and_other_errors_are_raised(
    redis: aioredis.Redis,
) -> None:
    group = consumer(redis, "c")
    await group.ensure()
    await redis.delete(STREAM)  # Redis lost the stream and its group
    assert await group.read(block_ms=10) == []
    await redis.xadd(STREAM, {"task": "t2"})
    [entry] = await group.read()
    assert entry.fields == {"task": "t2"}
    await redis.delete(STREAM)
    await redis.set(STREAM, "not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await group.ensure()
