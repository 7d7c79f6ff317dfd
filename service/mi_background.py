"""After a ``minion``/``minions`` task succeeds: estimate I(X; Z) of what its local model sent to
the remote, in the background, and write it into the task record's ``mi`` field.

The task is already ``succeeded`` (with ``mi.status = "pending"``) and its ``final`` event sent
before this starts, so scoring never delays an answer. The work is ``analysis.task_mi`` (the
same code path as the harness); this module adds the engine, the rolling reference set in Redis
(``keys.MI_REFERENCE``) and the record. Every outcome is a status: ``succeeded``, ``skipped``
(nothing to score), ``unsupported`` (the local engine cannot score), ``error`` (with the
message) or ``cancelled`` (the gateway stopped first); nothing here can fail the task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis

from analysis.engine_scorer import EngineScorer
from analysis.task_mi import (
    MILimits,
    MISkipped,
    contexts_to_share,
    score_task_mi,
    task_mi_inputs,
)
from protocols import Result, Task, protocol_class
from service import keys
from service.pool import EnginePool
from service.schemas import TaskMI
from service.store import Store
from workers import keys as worker_keys

logger = logging.getLogger(__name__)

# Tasks waiting for a scoring slot beyond this are not scored (status "skipped"): the queue of
# pending estimates must not grow without bound when tasks finish faster than they are scored.
MAX_WAITING = 64
EXPIRY_GRACE_S = 60.0


def expired(mi: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    """``mi`` as a reader should see it: a pending estimate past its ``expires_at`` is an error
    (the process scoring it died; nothing else would ever record it)."""
    if mi is None:
        return None
    if mi.get("status") == "pending" and now > float(mi.get("expires_at") or float("inf")):
        return {
            "status": "error",
            "error": "the process scoring it stopped before recording an estimate",
        }
    return mi


class TaskMIJob:
    """Scores one task at a time per gateway process (scoring shares the local engine with the
    tasks themselves)."""

    def __init__(self, store: Store, pool: EnginePool) -> None:
        settings = pool.settings
        self.store = store
        self.pool = pool
        self.enabled = settings.mi_enabled
        self.timeout_s = settings.mi_timeout_s
        self.limits = MILimits(
            max_contexts=settings.mi_max_contexts,
            max_compressions=settings.mi_max_compressions,
            reference_size=settings.mi_reference_size,
            max_context_chars=settings.mi_max_context_chars,
        )
        self._slot = asyncio.Semaphore(1)
        self._waiting = 0

    def wanted(self, protocol: str) -> bool:
        return self.enabled and protocol_class(protocol).sends_compressions

    def pending(self) -> dict[str, Any]:
        """The estimate to come. ``expires_at`` bounds the wait: scoring waits for at most
        ``MAX_WAITING`` others, each held to ``timeout_s``; past it, the process that was to score
        the task died, and the task view reports the estimate as an error (``expired``)."""
        wait_s = (MAX_WAITING + 1) * self.timeout_s + EXPIRY_GRACE_S
        return {"status": "pending", "expires_at": time.time() + wait_s}

    async def run(self, task_id: str, task: Task, result: Result, f1: float | None = None) -> None:
        """Score and record; never raises but for cancellation (recorded as ``cancelled``).
        A successful estimate is added to the dashboard's MI summary, with the task's accuracy
        (``f1``) when it was graded."""
        if self._waiting >= MAX_WAITING:
            await self._record(task_id, {"status": "skipped", "error": "too many tasks waiting"})
            return
        try:
            self._waiting += 1
            try:
                await self._slot.acquire()
            finally:
                self._waiting -= 1
            try:
                # Its turn: from now on the estimate is due within the timeout.
                await self._record(
                    task_id,
                    {"status": "pending", "expires_at": time.time() + self.timeout_s + 60.0},
                )
                fields = await self._attempt(task_id, task, result)
            finally:
                self._slot.release()
        except asyncio.CancelledError:
            try:
                await self._record(
                    task_id, {"status": "cancelled", "error": "the gateway stopped before scoring"}
                )
            except Exception:  # Redis gone at shutdown: the status stays "pending"
                logger.warning("task %s: could not record the cancelled estimate", task_id)
            raise
        recorded = await self._record(task_id, fields)
        if recorded and fields.get("status") == "succeeded" and fields.get("mi_bits") is not None:
            try:
                await self.store.summary.add_mi(
                    task_id=task_id,
                    protocol=result.protocol,
                    local_model=result.local_model,
                    mi_bits=float(fields["mi_bits"]),
                    compression_tokens=float(fields.get("mean_compression_tokens") or 0.0),
                    f1=f1,
                )
            except Exception:  # the summary is a view; the estimate itself is recorded
                logger.warning("task %s: could not add the estimate to the summary", task_id)

    async def _attempt(self, task_id: str, task: Task, result: Result) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                fields = await self._score(task_id, task, result)
        except MISkipped as skipped:
            fields = {"status": "skipped", "error": str(skipped)}
        except TimeoutError:
            fields = {"status": "error", "error": f"timed out after {self.timeout_s} s"}
        except Exception as exc:  # any failure is the estimate's, never the task's
            logger.warning("task %s: mutual information failed: %s", task_id, exc)
            fields = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:1000]}
        return {**fields, "seconds": time.perf_counter() - started}

    async def _score(self, task_id: str, task: Task, result: Result) -> dict[str, Any]:
        redis = self.store.redis
        run_id = f"{task_id}.mi"
        engine = self.pool.local_for(redis, run_id)
        if not engine.supports_score:
            return {
                "status": "unsupported",
                "error": f"the {engine.kind} local engine cannot score",
            }
        inputs = await asyncio.to_thread(
            task_mi_inputs, result, task, self.pool.local.count_tokens, self.limits
        )
        try:
            references = await recent_references(redis, task_id, self.limits.reference_size)
            try:
                score = await score_task_mi(EngineScorer(engine), inputs, references, self.limits)
            finally:
                # Shared even when scoring fails: the reference set must fill from the first tasks.
                await share_contexts(redis, task_id, inputs.contexts, self.limits.reference_size)
        finally:
            if self.pool.settings.local_pool is not None:
                await redis.delete(worker_keys.job_results(run_id))
        return {"status": "succeeded", **score.fields()}

    async def _record(self, task_id: str, fields: dict[str, Any]) -> bool:
        """Write the estimate; False when the record is gone or no longer succeeded."""
        mi = TaskMI.model_validate({**fields, "finished_at": time.time()})
        # Only onto a record that is still there and succeeded (never recreate a deleted one).
        moved = await self.store.tasks.transition(
            task_id, ("succeeded",), {"mi": mi.model_dump(exclude_none=True)}
        )
        return moved is True


async def recent_references(redis: aioredis.Redis, task_id: str, size: int) -> list[str]:
    """The rolling reference set, newest first, without this task's own contexts."""
    if size < 1:
        return []
    raw = cast("list[str]", await redis.lrange(keys.MI_REFERENCE, 0, size - 1))
    texts: list[str] = []
    for item in raw:
        try:
            entry = json.loads(item)
            if entry["task"] != task_id and isinstance(entry["text"], str):
                texts.append(entry["text"])
        except (ValueError, KeyError, TypeError):
            continue  # a malformed entry is only one reference less
    return texts


async def share_contexts(
    redis: aioredis.Redis, task_id: str, contexts: Sequence[str], size: int
) -> None:
    """Push some of this task's contexts onto the reference list and cap it at ``size``."""
    shared = contexts_to_share(contexts, size)
    if not shared:
        return
    entries = [json.dumps({"task": task_id, "text": text}) for text in shared]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(keys.MI_REFERENCE, *entries)
        pipe.ltrim(keys.MI_REFERENCE, 0, size - 1)
        await pipe.execute()
