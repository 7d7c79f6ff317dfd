"""``QueuedEngine``: an ``Engine`` whose calls run on queue workers, so protocols run on remote
GPUs without a change.

A call becomes jobs XADDed to ``mgw:jobs:<pool>``; the call then blocks (``XREAD BLOCK``) on its
own reply stream until every job has an outcome, and returns them in order. Job ids are
deterministic per task (``jobs.job_id_for``), and outcomes are kept under the job id, so a call
repeated by a restarted runner reuses every outcome already recorded instead of running it
again. Cancelling a call withdraws (``XDEL``) its unfinished jobs.

``count_tokens`` uses the ``token_counter`` passed in (give it the local model's tokenizer when
chunking must be exact); the default is the ~4-characters-a-token estimate the OpenAI adapter
uses too, which is only safe with headroom in the context window.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from engines.base import (
    Engine,
    GenerationRequest,
    GenerationResult,
    estimate_tokens,
    validate_continuations,
)
from workers import keys
from workers.queue import registry
from workers.queue.jobs import (
    Job,
    JobFailedError,
    JobKind,
    NoLiveWorkerError,
    Outcome,
    QueueTiming,
    canonical_content,
    decode_outcome,
    generation_body,
    job_id_for,
    score_body,
    work_tokens,
)
from workers.streams import REDIS_DOWN

logger = logging.getLogger(__name__)

REPLY_TTL_MS = 15 * 60 * 1000  # renewed while the call waits; a crashed caller's stream expires
REPLY_RENEW_S = 60.0


def no_worker_message(pool: str, waited_s: float = 0.0) -> str:
    waited = f" (waited {waited_s:g} s for one)" if waited_s > 0 else ""
    return (
        f"no live worker serves local-model pool {pool!r}{waited}: start one with "
        f"`minions-gw worker --pool {pool} --engine vllm --model <model>`"
    )


class QueuedEngine(Engine):
    kind = "queued"
    supports_json_schema = True
    supports_score = True

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        pool: str = "default",
        task_id: str | None = None,
        model: str = "queued",
        context_window: int = 8192,
        token_counter: Callable[[str], int] = estimate_tokens,
        timing: QueueTiming | None = None,
        max_queued_jobs: int | None = 100_000,
    ) -> None:
        super().__init__(model=model, context_window=context_window)
        self.pool = keys.check_name("pool", pool)
        self.task_id = keys.check_name("task_id", task_id or uuid.uuid4().hex)
        self.timing = timing or QueueTiming()
        self.max_queued_jobs = max_queued_jobs
        self._redis = redis
        self._stream = keys.job_stream(pool)
        self._count = token_counter
        self._occurrences: Counter[str] = Counter()
        self._worker_seen_at = float("-inf")

    @classmethod
    async def for_pool(
        cls, redis: aioredis.Redis, pool: str = "default", **options: Any
    ) -> QueuedEngine:
        """A queued engine named after the pool's live workers' model, with the smallest context
        window among them. Fails fast when the pool has no live worker."""
        workers = await registry.live_workers(redis, pool)
        if not workers:
            raise NoLiveWorkerError(no_worker_message(pool))
        infos = sorted(workers.values(), key=lambda info: int(info["context_window"]))
        return cls(
            redis,
            pool=pool,
            model=infos[0]["model"],
            context_window=int(infos[0]["context_window"]),
            **options,
        )

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pool": self.pool}

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        outcomes = await self._run("generate", [generation_body(r) for r in requests])
        results = [outcome.generation for outcome in outcomes]
        if any(result is None for result in results):
            raise JobFailedError("a generate job came back without a generation", self.task_id)
        return [result for result in results if result is not None]

    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        validate_continuations(continuations)
        (outcome,) = await self._run("score", [score_body(prefix, continuations)])
        return outcome.scores

    # -- one call -------------------------------------------------------------------------------
    async def _run(self, kind: JobKind, bodies: list[dict[str, Any]]) -> list[Outcome]:
        if not bodies:
            return []
        reply = keys.reply_stream(self.task_id, uuid.uuid4().hex)
        jobs = [self._job(kind, body, reply) for body in bodies]
        outcomes, queued = await self._reusable([job.job_id for job in jobs])
        todo = [job for job in jobs if job.job_id not in outcomes]
        if todo:
            await self._require_worker()
            await self._wait_for_room(len(todo), queued)
            entry_ids = await self._enqueue(reply, todo)
            outstanding = {job.job_id: entry for job, entry in zip(todo, entry_ids, strict=True)}
            try:
                await self._collect(reply, outstanding, outcomes)
            finally:
                await self._withdraw(reply, list(outstanding.values()))
        for job in jobs:
            outcomes[job.job_id].raise_for_failure(job.job_id)
        return [outcomes[job.job_id] for job in jobs]

    def _job(self, kind: JobKind, body: dict[str, Any], reply: str) -> Job:
        content = canonical_content(kind, body)
        self._occurrences[content] += 1
        return Job(
            job_id=job_id_for(self.task_id, content, self._occurrences[content]),
            task_id=self.task_id,
            kind=kind,
            reply_to=reply,
            reclaim_after_ms=self.timing.reclaim_after_ms(work_tokens(kind, body)),
            body=body,
        )

    async def _reusable(self, job_ids: list[str]) -> tuple[dict[str, Outcome], int]:
        """Outcomes an earlier run of the task already recorded, and the pool's queue length."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.job_results(self.task_id), job_ids)
            pipe.xlen(self._stream)
            raw, queued = await pipe.execute()
        found = _decoded(job_ids, raw)
        if found:
            logger.info("task %s: reusing %d recorded local result(s)", self.task_id, len(found))
            await self._redis.hincrby(keys.pool_stats(self.pool), "reused", len(found))
        return found, int(queued)

    async def _recorded(self, job_ids: list[str]) -> dict[str, Outcome]:
        if not job_ids:
            return {}
        raw: Any = await self._redis.hmget(keys.job_results(self.task_id), job_ids)
        return _decoded(job_ids, raw)

    async def _require_worker(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._worker_seen_at < self.timing.poll_s:
            return
        wait_s, poll_s = self.timing.pool_wait_s, self.timing.poll_s
        if not await registry.wait_for_live_worker(self._redis, self.pool, wait_s, poll_s):
            raise NoLiveWorkerError(no_worker_message(self.pool, wait_s))
        self._worker_seen_at = loop.time()

    async def _wait_for_room(self, count: int, queued: int) -> None:
        """Backpressure: wait while the pool's queue (``queued`` long) is too full to take
        ``count`` more jobs. A soft bound: callers checking at once may overshoot it together."""
        if self.max_queued_jobs is None:
            return
        while queued and queued + count > self.max_queued_jobs:
            logger.info("pool %r holds %d jobs; waiting for room", self.pool, queued)
            await asyncio.sleep(self.timing.poll_s)
            queued = int(await self._redis.xlen(self._stream))

    async def _enqueue(self, reply: str, jobs: list[Job]) -> list[str]:
        # One MULTI/EXEC: an idle worker blocked in XREADGROUP wakes once, with the whole call's
        # jobs in reach (up to its batch), instead of waking on the first XADD with one job.
        async with self._redis.pipeline(transaction=True) as pipe:
            marker: dict[Any, Any] = {"opened": self.task_id}
            pipe.xadd(reply, marker)
            pipe.pexpire(reply, REPLY_TTL_MS)
            for job in jobs:
                pipe.xadd(self._stream, job.fields())
            pipe.hincrby(keys.pool_stats(self.pool), "enqueued", len(jobs))
            results = await pipe.execute()
        return [str(entry_id) for entry_id in results[2 : 2 + len(jobs)]]

    async def _collect(
        self, reply: str, outstanding: dict[str, str], outcomes: dict[str, Outcome]
    ) -> None:
        """Wait for every outstanding job's outcome. The reply stream wakes the call; when it is
        quiet, the recorded results are read too (a reply lost in a Redis restart is harmless),
        and a pool left without live workers for ``no_worker_grace_s`` fails the call."""
        loop = asyncio.get_running_loop()
        last_id, renew_at, orphaned_since = "0-0", loop.time() + REPLY_RENEW_S, None
        while outstanding:
            try:
                response: Any = await self._redis.xread(
                    {reply: last_id}, count=1024, block=self.timing.poll_ms
                )
                for _stream, entries in response or []:
                    for entry_id, fields in entries:
                        last_id = entry_id
                        for job_id, outcome in fields.items():
                            if job_id in outstanding:
                                outcomes[job_id] = decode_outcome(outcome)
                                del outstanding[job_id]
                if response and loop.time() < renew_at:
                    continue
                renew_at = loop.time() + REPLY_RENEW_S
                await self._redis.pexpire(reply, REPLY_TTL_MS)
                for job_id, outcome in (await self._recorded(list(outstanding))).items():
                    outcomes[job_id] = outcome
                    del outstanding[job_id]
                if not outstanding or await registry.live_workers(self._redis, self.pool):
                    orphaned_since = None
                elif orphaned_since is None:
                    orphaned_since = loop.time()
                elif loop.time() - orphaned_since > self.timing.no_worker_grace_s:
                    raise NoLiveWorkerError(
                        f"{no_worker_message(self.pool)} ({len(outstanding)} job(s) of task "
                        f"{self.task_id} were waiting)"
                    )
            except REDIS_DOWN as exc:
                logger.warning("task %s: Redis unreachable (%s); retrying", self.task_id, exc)
                await asyncio.sleep(min(1.0, self.timing.poll_s))

    async def _withdraw(self, reply: str, entry_ids: list[str]) -> None:
        """Delete the reply stream and any job still queued (a cancelled or failed call)."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(reply)
                if entry_ids:
                    pipe.xdel(self._stream, *entry_ids)
                await pipe.execute()
        except REDIS_DOWN as exc:
            logger.warning("task %s: could not withdraw its jobs (%s)", self.task_id, exc)
        if entry_ids:
            logger.info("task %s: withdrew %d unfinished job(s)", self.task_id, len(entry_ids))


def _decoded(job_ids: list[str], raw: list[str | None]) -> dict[str, Outcome]:
    return {
        job_id: decode_outcome(value)
        for job_id, value in zip(job_ids, raw, strict=True)
        if value is not None
    }
