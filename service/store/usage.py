"""Usage aggregates by API key, protocol and day (UTC): tasks, tokens, cost, accuracy."""

from __future__ import annotations

import time
from typing import Any, Literal, cast

import redis.asyncio as aioredis

from service import keys

UsageBy = Literal["key", "protocol", "day"]
DIMENSIONS: tuple[UsageBy, ...] = ("key", "protocol", "day")
COUNTERS = (
    "tasks",
    "succeeded",
    "failed",
    "cancelled",
    "local_prompt_tokens",
    "local_completion_tokens",
    "remote_prompt_tokens",
    "remote_completion_tokens",
    "cost_nano",
    "graded",
    "exact_match",
    "f1_micro",  # token F1 in millionths, summed over graded tasks
    # The remote-only counterfactual (Result.baseline) of the tasks that have one.
    "baseline_tasks",
    "baseline_prompt_tokens",
    "baseline_nano",
    "baseline_cost_nano",  # what those tasks spent, for their savings factor
)


# KEYS: the three usage hashes, then the three index sets; ARGV: the three dimension values,
# then counter name/amount pairs. One command instead of one per counter and dimension.
_ADD = """
for i = 1, 3 do
  redis.call('SADD', KEYS[i + 3], ARGV[i])
  for j = 4, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[i], ARGV[j], ARGV[j + 1])
  end
end
return 1
"""


def day_of(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


class UsageStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._add = redis.register_script(_ADD)

    async def queue_add(
        self, pipe: Any, *, key_id: str, protocol: str, finished_at: float, counters: dict[str, int]
    ) -> None:
        """Add the counters to a pipeline, under the key, the protocol and the day (awaiting
        only queues the command)."""
        values = {"key": key_id, "protocol": protocol, "day": day_of(finished_at)}
        names = [keys.usage(by, value) for by, value in values.items()]
        names += [keys.usage_index(by) for by in values]
        args: list[str | int] = list(values.values())
        for name, amount in counters.items():
            if amount:
                args += [name, amount]
        await self._add(keys=names, args=args, client=pipe)

    async def report(self, by: UsageBy) -> dict[str, dict[str, int]]:
        values = sorted(cast("set[str]", await self.redis.smembers(keys.usage_index(by))))
        async with self.redis.pipeline(transaction=False) as pipe:
            for value in values:
                pipe.hgetall(keys.usage(by, value))
            rows = await pipe.execute()
        return {
            value: {name: int(row.get(name, 0)) for name in COUNTERS}
            for value, row in zip(values, rows, strict=True)
        }
