"""Taking over jobs whose worker died or stalled, and dead-lettering jobs nobody can finish.

Each job has its own deadline (``reclaim_after_ms``, from its ``max_tokens``), and ``XAUTOCLAIM``
takes a single min-idle for the whole stream, so a pass is: ``XPENDING ... IDLE floor`` lists
the held entries idle past the smallest deadline, with their owner and delivery count; an entry
is due when its owner's heartbeat has expired, or when it has been idle past its own deadline;
each due entry is taken with ``XCLAIM`` guarded by that same min-idle, so when two workers race
for it exactly one wins (the winner's claim resets the idle time). An entry already delivered
``max_deliveries`` times is not run again: it goes to the dead-letter stream and fails its job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from workers import keys
from workers.queue import ledger, registry
from workers.queue.jobs import Job, QueueTiming

logger = logging.getLogger(__name__)

PAGE = 256


@dataclass(frozen=True, slots=True)
class Held:
    entry_id: str
    consumer: str
    idle_ms: int
    deliveries: int


class Reclaimer:
    def __init__(
        self, redis: aioredis.Redis, pool: str, consumer: str, timing: QueueTiming
    ) -> None:
        self._redis = redis
        self._pool = pool
        self._stream = keys.job_stream(pool)
        self._consumer = consumer
        self._timing = timing
        # No entry can be due before this: a dead owner's entries wait one heartbeat TTL.
        self._floor_ms = min(timing.heartbeat_ttl_ms, timing.reclaim_after_ms(1))
        # Entries never change: the jobs of entries seen held in the last pass, by entry id,
        # so each pass only reads the entries that are new to it.
        self._seen: dict[str, Job] = {}

    async def sweep(self, limit: int) -> list[Job]:
        """One pass. Returns the jobs it claimed for this consumer, to run again: up to ``limit``
        of them, or a single one when that job's delivery is its last chance (which must run
        alone, so a job that crashes its worker every time cannot take others down with it)."""
        held = await self._idle_entries()
        if not held:
            return []
        owners_alive = await registry.alive(self._redis, sorted({h.consumer for h in held}))
        jobs = await self._entries([h.entry_id for h in held])
        gone = [h.entry_id for h in held if jobs[h.entry_id] is None]
        await ledger.drop_entries(self._redis, self._pool, gone)  # withdrawn, or not a job
        self._seen = {entry_id: job for entry_id, job in jobs.items() if job is not None}
        again: list[tuple[Held, int]] = []
        last_chance: list[tuple[Held, int]] = []
        for entry in held:
            job = jobs[entry.entry_id]
            if job is None:
                continue
            deadline = job.reclaim_after_ms if entry.consumer in owners_alive else self._floor_ms
            if entry.idle_ms < deadline:
                continue
            if entry.deliveries >= self._timing.max_deliveries:
                await self._dead_letter(entry, job, deadline)
            elif entry.deliveries + 1 >= self._timing.max_deliveries:
                last_chance.append((entry, deadline))
            else:
                again.append((entry, deadline))
        claimed: list[Job] = []
        for entry, deadline in again:
            if len(claimed) >= limit:
                break
            if (job := await self._claim(entry, deadline)) is not None:
                claimed.append(job)
        for entry, deadline in last_chance:
            if claimed:
                break
            if (job := await self._claim(entry, deadline)) is not None:
                claimed.append(job)
        if claimed:
            await self._redis.hincrby(keys.pool_stats(self._pool), "reclaimed", len(claimed))
            logger.warning(
                "worker %s reclaimed %d job(s) from pool %r",
                self._consumer,
                len(claimed),
                self._pool,
            )
        return claimed

    async def _idle_entries(self) -> list[Held]:
        held: list[Held] = []
        start = "-"
        while True:
            page: list[dict[str, Any]] = await self._redis.xpending_range(
                self._stream, keys.JOB_GROUP, start, "+", PAGE, idle=self._floor_ms
            )
            held.extend(
                Held(
                    entry_id=item["message_id"],
                    consumer=item["consumer"],
                    idle_ms=int(item["time_since_delivered"]),
                    deliveries=int(item["times_delivered"]),
                )
                for item in page
            )
            if len(page) < PAGE:
                return held
            start = "(" + page[-1]["message_id"]

    async def _entries(self, entry_ids: list[str]) -> dict[str, Job | None]:
        """The job of each entry; None for one deleted from the stream, or not a job."""
        jobs: dict[str, Job | None] = {i: self._seen[i] for i in entry_ids if i in self._seen}
        unseen = [entry_id for entry_id in entry_ids if entry_id not in jobs]
        if not unseen:
            return jobs
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id in unseen:
                pipe.xrange(self._stream, entry_id, entry_id, count=1)
            found = await pipe.execute()
        for entry_id, rows in zip(unseen, found, strict=True):
            jobs[entry_id] = None
            if rows and rows[0][1]:
                try:
                    jobs[entry_id] = Job.from_entry(entry_id, rows[0][1])
                except (KeyError, ValueError):
                    logger.exception("dropping corrupt job entry %s", entry_id)
        return jobs

    async def _claim(self, entry: Held, min_idle_ms: int) -> Job | None:
        rows: Any = await self._redis.xclaim(
            self._stream, keys.JOB_GROUP, self._consumer, min_idle_ms, [entry.entry_id]
        )
        for entry_id, fields in rows:
            if entry_id == entry.entry_id and fields:
                try:
                    return Job.from_entry(entry_id, fields, deliveries=entry.deliveries + 1)
                except (KeyError, ValueError):
                    logger.exception("dropping corrupt job entry %s", entry_id)
                    await ledger.drop_entries(self._redis, self._pool, [entry_id])
            elif entry_id is None:  # Redis 6.2: claimed, but deleted (withdrawn) since
                await ledger.drop_entries(self._redis, self._pool, [entry.entry_id])
        return None  # another worker won the race, or the caller withdrew the job

    async def _dead_letter(self, entry: Held, job: Job, min_idle_ms: int) -> None:
        owned: Any = await self._redis.xclaim(
            self._stream,
            keys.JOB_GROUP,
            self._consumer,
            min_idle_ms,
            [entry.entry_id],
            justid=True,
        )
        if entry.entry_id not in owned:
            return  # another worker is dead-lettering it
        last_error: Any = await self._redis.get(keys.job_error(job.job_id))
        await ledger.dead_letter(
            self._redis, self._pool, job, entry.deliveries, last_error, self._timing.result_ttl_s
        )

    async def forget_dead_consumers(self) -> None:
        """Delete group consumers that are dead, hold nothing and have been silent a while."""
        consumers: list[dict[str, Any]] = await self._redis.xinfo_consumers(
            self._stream, keys.JOB_GROUP
        )
        silent = [
            str(c["name"])
            for c in consumers
            if int(c["pending"]) == 0 and int(c["idle"]) > 2 * self._timing.heartbeat_ttl_ms
        ]
        for name in set(silent) - await registry.alive(self._redis, silent):
            await self._redis.xgroup_delconsumer(self._stream, keys.JOB_GROUP, name)
