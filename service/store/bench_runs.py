"""Published bench reports (``minions-gw bench --publish``): each report as JSON under its id,
and a sorted set of ids by publication time, so listing reads only the newest few."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, cast

import redis.asyncio as aioredis

from service import keys


def new_bench_run_id() -> str:
    return f"bench_{int(time.time() * 1000):011x}{secrets.token_hex(4)}"


class BenchRunStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def add(self, report: dict[str, Any]) -> dict[str, Any]:
        """Store a report; returns it (less its per-question outcomes, kept apart so listing
        stays small) with its ``id`` and ``created_at``."""
        outcomes = report.get("outcomes", [])
        record = {"id": new_bench_run_id(), "created_at": time.time(), **report}
        record.pop("outcomes", None)
        record["outcome_count"] = len(outcomes)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.bench_run(record["id"]), json.dumps(record))
            pipe.set(keys.bench_run_outcomes(record["id"]), json.dumps(outcomes))
            pipe.zadd(keys.BENCH_RUNS, {record["id"]: record["created_at"]})
            await pipe.execute()
        return record

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` reports, newest first."""
        ids = cast("list[str]", await self.redis.zrevrange(keys.BENCH_RUNS, 0, limit - 1))
        if not ids:
            return []
        values = await self.redis.mget([keys.bench_run(i) for i in ids])
        return [json.loads(value) for value in values if value]

    async def get(self, run_id: str) -> dict[str, Any] | None:
        """A report with its outcomes; None for an unknown id."""
        if len(run_id) > 64:
            return None
        value, outcomes = await self.redis.mget(
            [keys.bench_run(run_id), keys.bench_run_outcomes(run_id)]
        )
        if not value:
            return None
        record: dict[str, Any] = json.loads(value)
        record["outcomes"] = json.loads(outcomes) if outcomes else []
        return record
