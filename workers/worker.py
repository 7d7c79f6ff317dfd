"""A queue worker: runs the local-LM jobs of one pool on one engine.

``Worker.run`` reads up to ``batch`` entries at a time from the pool's stream through the
consumer group (``XREADGROUP COUNT batch BLOCK``) and hands all of one read's generate jobs to
the engine as ONE batch (score jobs run concurrently). Each outcome is stored under its job id,
sent to the caller's reply stream, and the entry acknowledged and deleted (``ledger.finish``).

Failures: when a batch raises, its jobs are retried one by one, so only the poison job fails.
A job the engine refuses for good (``ValueError``, ``EngineCapabilityError``) fails at once; any
other error hands it back for another delivery, and after ``max_deliveries`` it is
dead-lettered. A job on its last allowed delivery is claimed and run alone, so a job that
crashes its process every time cannot take innocent batch mates down with it.

A heartbeat task keeps the worker's registration alive. Between reads, every
``reclaim_interval_s`` (and again at once while it finds work), the loop sweeps the pool for lost
jobs and runs the ones it claimed (see ``workers.queue.reclaim``). ``stop()`` (SIGTERM) stops
reading, finishes the batch in hand, deregisters and returns. Redis outages (a restart) are
waited out: every Redis step is retried until the server answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from engines.base import Engine, GenerationResult
from engines.errors import EngineError
from workers import keys
from workers.queue import ledger, registry
from workers.queue.jobs import (
    Job,
    QueueTiming,
    encode_failure,
    encode_generation,
    encode_scores,
    failure_kind,
)
from workers.queue.reclaim import Reclaimer
from workers.streams import REDIS_DOWN, ConsumerGroup, retry_while_down

logger = logging.getLogger(__name__)

T = TypeVar("T")
Attempt = GenerationResult | list[float] | BaseException


class Worker:
    def __init__(
        self,
        redis: aioredis.Redis,
        engine: Engine,
        *,
        pool: str = "default",
        batch: int = 32,
        consumer_name: str | None = None,
        timing: QueueTiming | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch: must be >= 1, got {batch}")
        self.pool = keys.check_name("pool", pool)
        self.name = keys.check_name("worker", consumer_name or registry.default_worker_name(pool))
        self.batch = batch
        self.timing = timing or QueueTiming()
        self._redis = redis
        self._engine = engine
        self._stream = keys.job_stream(pool)
        self._reclaimer = Reclaimer(redis, pool, self.name, self.timing)
        self._group = ConsumerGroup(
            redis,
            self._stream,
            keys.JOB_GROUP,
            self.name,
            reclaim_after_ms=self.timing.heartbeat_ttl_ms,
        )
        self._stopping = asyncio.Event()
        self.jobs_run = 0
        # True while the last read of the job stream came back empty: sidecar work (studies)
        # only starts then, so language-model jobs come first.
        self.idle = False

    def stop(self) -> None:
        """Stop reading; ``run`` finishes the batch in hand, cleans up and returns."""
        self._stopping.set()

    async def run(self) -> None:
        info = registry.registration(self._engine, self.pool, self.batch)
        await self._redis_step("register", lambda: self._register(info))
        logger.info("worker %s serving pool %r (batch %d)", self.name, self.pool, self.batch)
        beating = asyncio.create_task(self._heartbeats(info))
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.timing.reclaim_interval_s
        try:
            while not self._stopping.is_set():
                jobs: list[Job] = []
                if loop.time() >= next_sweep:
                    jobs = await self._sweep()
                    next_sweep = loop.time() + (0 if jobs else self.timing.reclaim_interval_s)
                jobs = jobs or await self._read()
                self.idle = not jobs
                if jobs:
                    try:
                        await self._process(jobs)
                    finally:
                        for job in jobs:
                            self._group.release(job.entry_id)
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
            await self._leave()

    # -- reading ------------------------------------------------------------------------------
    async def _register(self, info: dict[str, str]) -> None:
        await self._group.ensure()
        await registry.heartbeat(self._redis, self.name, info, self.timing.heartbeat_ttl_s)

    async def _read(self) -> list[Job]:
        try:
            entries = await self._group.read(count=self.batch, block_ms=self.timing.poll_ms)
        except REDIS_DOWN as exc:
            logger.warning("Redis unreachable (%s); retrying", exc)
            await asyncio.sleep(min(1.0, self.timing.poll_s))
            return []
        jobs, corrupt = [], []
        for entry in entries:
            try:
                jobs.append(Job.from_entry(entry.entry_id, entry.fields))
            except (KeyError, ValueError):
                logger.exception("dropping corrupt job entry %s", entry.entry_id)
                corrupt.append(entry.entry_id)
                self._group.release(entry.entry_id)
        if corrupt:
            await self._redis_step(
                "drop", lambda: ledger.drop_entries(self._redis, self.pool, corrupt)
            )
        return jobs

    # -- running ------------------------------------------------------------------------------
    async def _process(self, jobs: list[Job]) -> None:
        batch = [job for job in jobs if job.deliveries < self.timing.max_deliveries]
        attempts = await self._execute(batch) if batch else []
        for last_chance in (job for job in jobs if job.deliveries >= self.timing.max_deliveries):
            attempts += await self._execute([last_chance])
        self.jobs_run += len(jobs)
        await self._settle(attempts)

    async def _execute(self, jobs: Sequence[Job]) -> list[tuple[Job, Attempt]]:
        generate = [job for job in jobs if job.kind == "generate"]
        score = [job for job in jobs if job.kind == "score"]
        scores = asyncio.gather(*(self._score(job) for job in score), return_exceptions=True)
        generated, scored = await asyncio.gather(self._generate(generate), scores)
        return list(zip(generate, generated, strict=True)) + list(zip(score, scored, strict=True))

    async def _generate(self, jobs: Sequence[Job]) -> list[Attempt]:
        if not jobs:
            return []
        if self._engine.isolates_failures:
            # One failed request fails its job alone; the others' results are kept as they are.
            return list(await self._engine.generate_settled([job.request() for job in jobs]))
        try:
            results = await self._engine.generate([job.request() for job in jobs])
            if len(results) != len(jobs):
                raise EngineError(f"the engine answered {len(results)} of {len(jobs)} requests")
            return list(results)
        except Exception as exc:
            if len(jobs) == 1:
                return [exc]
            logger.warning("a batch of %d failed (%s); running its jobs one by one", len(jobs), exc)

        async def alone(job: Job) -> Attempt:
            try:
                return (await self._engine.generate([job.request()]))[0]
            except Exception as exc:
                return exc

        return list(await asyncio.gather(*(alone(job) for job in jobs)))

    async def _score(self, job: Job) -> list[float]:
        return await self._engine.score(*job.score_args())

    async def _settle(self, attempts: list[tuple[Job, Attempt]]) -> None:
        finished: list[ledger.Finished] = []
        retry: list[tuple[Job, str]] = []
        dead: list[tuple[Job, str]] = []
        for job, attempt in attempts:
            if isinstance(attempt, GenerationResult):
                finished.append(ledger.Finished(job, encode_generation(attempt), True))
            elif isinstance(attempt, list):
                finished.append(ledger.Finished(job, encode_scores(attempt), True))
            else:
                error = f"{type(attempt).__name__}: {attempt}"
                logger.warning("job %s failed (delivery %d): %s", job.job_id, job.deliveries, error)
                permanent = failure_kind(attempt)
                if permanent is not None:
                    finished.append(
                        ledger.Finished(job, encode_failure(permanent, str(attempt)), False)
                    )
                elif job.deliveries >= self.timing.max_deliveries:
                    dead.append((job, error))
                else:
                    retry.append((job, error))
        ttl = self.timing.result_ttl_s
        await self._redis_step(
            "finish", lambda: ledger.finish(self._redis, self.pool, finished, ttl)
        )
        if retry:
            jobs, errors = [job for job, _ in retry], [error for _, error in retry]
            await self._redis_step(
                "release", lambda: ledger.release(self._redis, self.pool, self.name, jobs, errors)
            )
        for job, error in dead:
            await self._redis_step(
                "dead-letter",
                lambda: ledger.dead_letter(self._redis, self.pool, job, job.deliveries, error, ttl),  # noqa: B023
            )

    # -- background duties ----------------------------------------------------------------------
    async def _heartbeats(self, info: dict[str, str]) -> None:
        while True:
            await asyncio.sleep(self.timing.heartbeat_ttl_s / 3)
            try:
                await registry.heartbeat(self._redis, self.name, info, self.timing.heartbeat_ttl_s)
            except REDIS_DOWN as exc:
                logger.warning("heartbeat: Redis unreachable (%s)", exc)
            except RedisError:
                logger.exception("heartbeat failed")

    async def _sweep(self) -> list[Job]:
        """Claim lost jobs of the pool (an empty list while Redis is unreachable)."""
        try:
            jobs = await self._reclaimer.sweep(self.batch)
            if not jobs:
                await self._reclaimer.forget_dead_consumers()
            return jobs
        except REDIS_DOWN as exc:
            logger.warning("reclaim: Redis unreachable (%s)", exc)
        except ResponseError:
            logger.exception("reclaim pass failed")
        return []

    async def _leave(self) -> None:
        """Deregister, and drop the consumer from the group when it holds nothing."""
        try:
            await registry.deregister(self._redis, self.name, self.pool)
            await self._group.leave()
        except RedisError as exc:
            logger.warning("worker %s left without cleaning up (%s)", self.name, exc)
        logger.info("worker %s stopped after %d job(s)", self.name, self.jobs_run)

    async def _redis_step(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """Run a Redis step, retrying while the server is unreachable (a restart). When the
        worker is stopping it gives up after one heartbeat TTL, leaving its jobs for reclaim."""
        return await retry_while_down(
            what, step, stopping=self._stopping.is_set, give_up_after_s=self.timing.heartbeat_ttl_s
        )


class Sidecar(Protocol):
    """Work a worker process runs beside its job loop (``workers.studies.StudyConsumer``)."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


async def run_until_signalled(worker: Worker, *sidecars: Sidecar) -> None:
    """Run ``worker`` and its sidecars; SIGTERM or SIGINT stops them all gracefully (as does
    any of them failing)."""
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        worker.stop()
        for sidecar in sidecars:
            sidecar.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_all)
    running = [asyncio.create_task(worker.run(), name="worker")]
    running += [asyncio.create_task(sidecar.run(), name="worker-sidecar") for sidecar in sidecars]
    try:
        await asyncio.wait(running, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        stop_all()
        outcomes = await asyncio.gather(*running, return_exceptions=True)
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
