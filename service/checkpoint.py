"""``CheckpointedEngine``: records a task's remote replies in Redis, so a runner that restarts the
task after its first runner died reuses them instead of paying for them again.

A call is keyed by the SHA-256 of its requests (canonical JSON) and how many identical calls the
task made before it, so the same protocol run over the same local results (a ``QueuedEngine``
reuses those by job id) asks the same calls in the same order and finds each recorded reply. A
call whose prompt differs (a non-deterministic local model without the queue) is made again.

It sits under the ``MeteredEngine``: a reused reply is billed to the task once, by the run that
finishes it (the dead runner never settled anything).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence

import redis.asyncio as aioredis

from engines.base import Engine, GenerationRequest, GenerationResult, WrappedEngine
from service import keys
from workers.queue.jobs import decode_outcome, encode_generation

logger = logging.getLogger(__name__)

CHECKPOINT_TTL_S = 24 * 3600


class CheckpointedEngine(WrappedEngine):
    def __init__(self, inner: Engine, redis: aioredis.Redis, task_id: str) -> None:
        super().__init__(inner)
        self.reused = 0
        self._redis = redis
        self._key = keys.task_remote_calls(task_id)
        self._occurrences: Counter[str] = Counter()

    def _call_key(self, requests: Sequence[GenerationRequest]) -> str:
        content = json.dumps(
            [request.model_dump(mode="json") for request in requests],
            sort_keys=True,
            separators=(",", ":"),
        )
        digest = hashlib.sha256(content.encode()).hexdigest()[:32]
        occurrence = self._occurrences[digest]
        self._occurrences[digest] += 1
        return f"{digest}:{occurrence}"

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        field = self._call_key(requests)
        recorded = await self._redis.hget(self._key, field)
        if recorded is not None:
            stored = [decode_outcome(raw).generation for raw in json.loads(recorded)]
            reused = [result for result in stored if result is not None]
            if len(reused) == len(requests):
                self.reused += 1
                logger.info("reusing a recorded remote reply (%s) of a restarted task", field)
                return reused
        results = await self.inner.generate(requests)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key, field, json.dumps([encode_generation(r) for r in results]))
            pipe.expire(self._key, CHECKPOINT_TTL_S)
            await pipe.execute()
        return results
