"""The dashboard's summaries, kept incrementally: when a task settles, one script adds its
numbers to an hourly bucket, a daily bucket and the all-time totals; when its mutual information
is scored, to the per-protocol-and-model MI totals. Reading a summary sums a fixed number of
buckets (48 hours or 30 days), so its cost does not grow with the number of tasks stored."""

from __future__ import annotations

import bisect
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis.asyncio as aioredis

from service import keys

Bucket = Literal["hour", "day"]
BUCKET_SECONDS: dict[Bucket, int] = {"hour": 3600, "day": 86_400}
SPAN: dict[Bucket, int] = {"hour": 48, "day": 30}  # buckets a summary reads
RETAIN_S: dict[Bucket, int] = {"hour": 8 * 86_400, "day": 400 * 86_400}

# Latency histogram: upper bounds growing by a quarter from 50 ms (the last one ~ 5 h), so a
# percentile read from it is within 25% of the true value.
LATENCY_BOUNDS: tuple[float, ...] = tuple(0.05 * 1.25**i for i in range(52))
MI_POINTS_KEPT = 500  # the most recent (MI, accuracy) pairs kept for the scatter plot
MICRO = 1_000_000

# KEYS: hour bucket, day bucket, totals. ARGV: hour TTL, day TTL, then field/amount pairs.
_SETTLE = """
for i = 1, 3 do
  for j = 3, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[i], ARGV[j], ARGV[j + 1])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


def bucket_start(timestamp: float, bucket: Bucket) -> int:
    size = BUCKET_SECONDS[bucket]
    return int(timestamp // size) * size


def latency_bucket(seconds: float) -> int:
    return min(bisect.bisect_left(LATENCY_BOUNDS, seconds), len(LATENCY_BOUNDS) - 1)


def percentile(histogram: dict[int, int], q: float) -> float | None:
    """The upper bound of the histogram bucket holding quantile ``q``; None when empty."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = math.ceil(q * total)
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return LATENCY_BOUNDS[index]
    return LATENCY_BOUNDS[-1]


@dataclass(frozen=True, slots=True)
class Settled:
    """What one settled task adds to the summaries."""

    protocol: str
    status: str | None  # None: the run was interrupted (shutdown) and the task queued again
    finished_at: float
    latency_s: float | None  # created -> finished; None when unknown
    local_tokens: int = 0
    remote_tokens: int = 0
    cost_nano: int = 0
    baseline_nano: int | None = None  # what remote-only would have cost (None: not counted)
    baseline_prompt_tokens: int = 0

    def fields(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        if self.status is not None:
            counts |= {"tasks": 1, f"status:{self.status}": 1, f"protocol:{self.protocol}": 1}
            if self.latency_s is not None:
                counts[f"lat:{latency_bucket(self.latency_s)}"] = 1
        counts |= {
            "local_tokens": self.local_tokens,
            "remote_tokens": self.remote_tokens,
            "cost_nano": self.cost_nano,
        }
        if self.baseline_nano is not None:
            counts |= {
                "baseline_tasks": 1,
                "baseline_nano": self.baseline_nano,
                "baseline_cost_nano": self.cost_nano,  # spend of the tasks with a baseline
                "baseline_prompt_tokens": self.baseline_prompt_tokens,
            }
        return {name: amount for name, amount in counts.items() if amount}


@dataclass
class Counters:
    """One bucket's (or the totals') counters, parsed."""

    values: dict[str, int]

    @classmethod
    def parse(cls, raw: dict[str, str]) -> Counters:
        return cls({name: int(value) for name, value in raw.items()})

    def get(self, name: str) -> int:
        return self.values.get(name, 0)

    def prefixed(self, prefix: str) -> dict[str, int]:
        return {k[len(prefix) :]: v for k, v in self.values.items() if k.startswith(prefix)}

    def latency(self) -> dict[int, int]:
        return {int(k): v for k, v in self.prefixed("lat:").items()}


class SummaryStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._settle = redis.register_script(_SETTLE)

    async def queue_settled(self, pipe: Any, settled: Settled) -> None:
        """Add a settled task to its hour, its day and the totals (queued on ``pipe``)."""
        names = [
            keys.summary_bucket("hour", bucket_start(settled.finished_at, "hour")),
            keys.summary_bucket("day", bucket_start(settled.finished_at, "day")),
            keys.SUMMARY_TOTALS,
        ]
        fields = settled.fields()
        if not fields:
            return
        args: list[str | int] = [RETAIN_S["hour"], RETAIN_S["day"]]
        for name, amount in fields.items():
            args += [name, amount]
        await self._settle(keys=names, args=args, client=pipe)

    async def buckets(
        self, bucket: Bucket, now: float | None = None
    ) -> tuple[list[tuple[int, Counters]], Counters]:
        """The last ``SPAN[bucket]`` buckets (oldest first, empty ones included) and the
        all-time totals."""
        last = bucket_start(time.time() if now is None else now, bucket)
        starts = [last - i * BUCKET_SECONDS[bucket] for i in range(SPAN[bucket] - 1, -1, -1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for start in starts:
                pipe.hgetall(keys.summary_bucket(bucket, start))
            pipe.hgetall(keys.SUMMARY_TOTALS)
            rows = await pipe.execute()
        series = [(start, Counters.parse(row)) for start, row in zip(starts, rows, strict=False)]
        return series, Counters.parse(rows[-1])

    # -- mutual information ----------------------------------------------------------------
    async def add_mi(
        self,
        *,
        task_id: str,
        protocol: str,
        local_model: str,
        mi_bits: float,
        compression_tokens: float,
        f1: float | None,
    ) -> None:
        """Add one task's I(X;Z) estimate; with its accuracy, also a point of the scatter."""
        group = json.dumps([protocol, local_model])
        async with self.redis.pipeline(transaction=True) as pipe:
            name = keys.SUMMARY_MI
            pipe.hincrby(name, f"{group}|n", 1)
            pipe.hincrby(name, f"{group}|bits_micro", round(mi_bits * MICRO))
            pipe.hincrby(name, f"{group}|tokens_micro", round(compression_tokens * MICRO))
            if f1 is not None:
                point: dict[str, Any] = {
                    "task_id": task_id,
                    "protocol": protocol,
                    "local_model": local_model,
                    "mi_bits": mi_bits,
                    "f1": f1,
                }
                pipe.lpush(keys.SUMMARY_MI_POINTS, json.dumps(point))
                pipe.ltrim(keys.SUMMARY_MI_POINTS, 0, MI_POINTS_KEPT - 1)
            await pipe.execute()

    async def mi(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Per (protocol, local model): scored tasks, mean bits, bits per compression token (a
        ratio of sums); and the recent (MI, F1) points."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.SUMMARY_MI)
            pipe.lrange(keys.SUMMARY_MI_POINTS, 0, -1)
            raw, points = await pipe.execute()
        groups: dict[str, dict[str, int]] = {}
        for field, value in cast("dict[str, str]", raw).items():
            group, _, name = field.rpartition("|")
            groups.setdefault(group, {})[name] = int(value)
        rows = []
        for group, counts in sorted(groups.items()):
            protocol, local_model = json.loads(group)
            n, bits, tokens = (
                counts.get("n", 0),
                counts.get("bits_micro", 0),
                counts.get("tokens_micro", 0),
            )
            rows.append(
                {
                    "protocol": protocol,
                    "local_model": local_model,
                    "tasks": n,
                    "mi_bits": bits / MICRO / n if n else None,
                    "bits_per_token": bits / tokens if tokens else None,
                }
            )
        return rows, [json.loads(point) for point in points]
