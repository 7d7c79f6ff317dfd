"""Writing what happened to jobs, one pipeline per helper.

Finishing jobs stores each outcome under its job id in the task's results hash (an idempotent
overwrite), notifies each caller's reply stream with one entry for all its jobs of the batch
(``NOMKSTREAM``: a caller that gave up has deleted its stream, and a late worker must not bring
it back), acknowledges the entries and deletes them, so the stream only ever holds waiting and
held jobs. ``finish`` is a plain pipeline (the hot path; Redis runs its commands in order, and a
worker dying half-way only leaves jobs unacknowledged, so they run again and overwrite the same
results); the rare paths are MULTI/EXEC transactions.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from workers import keys, streams
from workers.queue.jobs import Job, encode_failure

logger = logging.getLogger(__name__)


class Finished(NamedTuple):
    job: Job
    outcome: str  # JSON, see ``workers.queue.jobs.encode_*``
    ok: bool


DEAD_LETTER_MAXLEN = 10_000
# Idle time given to a released entry so the next reclaim pass of any worker takes it.
RELEASED_IDLE_MS = 10**12


async def ensure_group(redis: aioredis.Redis, pool: str) -> None:
    """Create the pool's stream and consumer group if missing (from id 0: nothing is skipped)."""
    await streams.ensure_group(redis, keys.job_stream(pool), keys.JOB_GROUP)


async def finish(
    redis: aioredis.Redis, pool: str, done: Sequence[Finished], result_ttl_s: int
) -> None:
    """Record each job's outcome, notify its caller, acknowledge and delete it."""
    if not done:
        return
    stream = keys.job_stream(pool)
    completed = sum(1 for finished in done if finished.ok)
    by_task: dict[str, dict[Any, Any]] = defaultdict(dict)
    by_reply: dict[str, dict[Any, Any]] = defaultdict(dict)
    for job, outcome, _ok in done:
        by_task[job.task_id][job.job_id] = outcome
        by_reply[job.reply_to][job.job_id] = outcome
    async with redis.pipeline(transaction=False) as pipe:
        for task_id, outcomes in by_task.items():
            pipe.hset(keys.job_results(task_id), mapping=outcomes)
            pipe.expire(keys.job_results(task_id), result_ttl_s)
        for reply, outcomes in by_reply.items():
            pipe.xadd(reply, outcomes, nomkstream=True)
        entry_ids = [finished.job.entry_id for finished in done]
        pipe.xack(stream, keys.JOB_GROUP, *entry_ids)
        pipe.xdel(stream, *entry_ids)
        if completed:
            pipe.hincrby(keys.pool_stats(pool), "completed", completed)
        if len(done) > completed:
            pipe.hincrby(keys.pool_stats(pool), "failed", len(done) - completed)
        await pipe.execute()


async def release(
    redis: aioredis.Redis,
    pool: str,
    consumer: str,
    jobs: Sequence[Job],
    errors: Sequence[str] | None = None,
    error_ttl_s: int = 3600,
) -> None:
    """Hand held jobs back: mark them long idle so the next reclaim pass redelivers them.

    With ``errors`` (one per job) the jobs failed and the errors are kept for a dead letter.
    """
    if not jobs:
        return
    async with redis.pipeline(transaction=True) as pipe:
        if errors is not None:
            for job, error in zip(jobs, errors, strict=True):
                pipe.set(keys.job_error(job.job_id), error, ex=error_ttl_s)
            pipe.hincrby(keys.pool_stats(pool), "retried", len(jobs))
        pipe.xclaim(
            keys.job_stream(pool),
            keys.JOB_GROUP,
            consumer,
            0,
            [job.entry_id for job in jobs],
            idle=RELEASED_IDLE_MS,
            justid=True,
        )
        await pipe.execute()


def dead_letter_message(pool: str, job: Job, deliveries: int, last_error: str | None) -> str:
    why = last_error or "no worker finished it (each one that took it died or stalled)"
    return (
        f"local job {job.job_id} of task {job.task_id} was dead-lettered after {deliveries} "
        f"deliveries to pool {pool!r}: {why}"
    )


async def dead_letter(
    redis: aioredis.Redis,
    pool: str,
    job: Job,
    deliveries: int,
    last_error: str | None,
    result_ttl_s: int,
) -> str:
    """Move a job to the dead-letter stream and fail it with a clear error (returned)."""
    message = dead_letter_message(pool, job, deliveries, last_error)
    logger.error("%s", message)
    outcome = encode_failure("dead_letter", message)
    stream = keys.job_stream(pool)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(
            keys.dead_letter_stream(pool),
            {**job.fields(), "deliveries": str(deliveries), "error": message},
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )
        pipe.hset(keys.job_results(job.task_id), job.job_id, outcome)
        pipe.expire(keys.job_results(job.task_id), result_ttl_s)
        reply: dict[Any, Any] = {job.job_id: outcome}
        pipe.xadd(job.reply_to, reply, nomkstream=True)
        pipe.xack(stream, keys.JOB_GROUP, job.entry_id)
        pipe.xdel(stream, job.entry_id)
        pipe.delete(keys.job_error(job.job_id))
        pipe.hincrby(keys.pool_stats(pool), "dead_lettered", 1)
        await pipe.execute()
    return message


async def drop_entries(redis: aioredis.Redis, pool: str, entry_ids: Sequence[str]) -> None:
    """Acknowledge and delete entries that cannot be run (deleted by their caller, or corrupt)."""
    if entry_ids:
        stream = keys.job_stream(pool)
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, keys.JOB_GROUP, *entry_ids)
            pipe.xdel(stream, *entry_ids)
            await pipe.execute()
