"""The dashboard's numbers: the overview (tasks, spend against the remote-only counterfactual,
tokens, latency, queues), accuracy (graded tasks, published bench runs, the cost–accuracy
frontier) and information (MI per protocol and local model). Everything is read from counters
kept incrementally (``service.store.summary``, ``service.store.usage``), never from the tasks."""

from __future__ import annotations

import math
from typing import Any

from service.errors import NotFound
from service.store import Store
from service.store.api_keys import NANO
from service.store.summary import Bucket, Counters, percentile
from workers.queue import all_pools

STATUSES = ("succeeded", "failed", "cancelled")
BENCH_RUNS_SHOWN = 20
Z95 = 1.959963984540054


def wilson_ci95(successes: int, n: int) -> tuple[float, float]:
    """The Wilson score interval of a proportion: sound for small n and rates near 0 or 1."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def savings_factor(baseline_nano: int, cost_nano: int) -> float | None:
    return baseline_nano / cost_nano if cost_nano > 0 and baseline_nano > 0 else None


def mark_frontier(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flag the Pareto-optimal points: none other is at most as costly and more accurate, or
    cheaper and at least as accurate."""
    for point in points:
        point["on_frontier"] = not any(
            (other["cost_usd"] <= point["cost_usd"] and other["accuracy"] > point["accuracy"])
            or (other["cost_usd"] < point["cost_usd"] and other["accuracy"] >= point["accuracy"])
            for other in points
        )
    return points


def _row(start: int, counters: Counters) -> dict[str, Any]:
    return {
        "start": start,
        "tasks": counters.get("tasks"),
        "by_protocol": counters.prefixed("protocol:"),
        "by_status": counters.prefixed("status:"),
        "cost_usd": counters.get("cost_nano") / NANO,
        "baseline_usd": counters.get("baseline_nano") / NANO,
        "local_tokens": counters.get("local_tokens"),
        "remote_tokens": counters.get("remote_tokens"),
    }


class SummaryService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def publish_bench_run(self, report: dict[str, Any]) -> dict[str, Any]:
        """Store a ``minions-gw bench`` report; its record (id, created_at)."""
        return await self.store.bench_runs.add(report)

    async def bench_runs(self, limit: int) -> list[dict[str, Any]]:
        return await self.store.bench_runs.recent(limit)

    async def bench_run(self, run_id: str) -> dict[str, Any]:
        """A published report with its per-question outcomes; NotFound when there is none."""
        run = await self.store.bench_runs.get(run_id)
        if run is None:
            raise NotFound(f"no bench run {run_id!r}", param="run_id")
        return run

    async def overview(self, bucket: Bucket) -> dict[str, Any]:
        series, totals = await self.store.summary.buckets(bucket)
        latency: dict[int, int] = {}
        for _, counters in series:
            for index, n in counters.latency().items():
                latency[index] = latency.get(index, 0) + n
        pools = await all_pools(self.store.redis)
        return {
            "bucket": bucket,
            "series": [_row(start, counters) for start, counters in series],
            "totals": {
                **{name: totals.get(f"status:{name}") for name in STATUSES},
                "tasks": totals.get("tasks"),
                "by_protocol": totals.prefixed("protocol:"),
                "cost_usd": totals.get("cost_nano") / NANO,
                "baseline_usd": totals.get("baseline_nano") / NANO,
                "baseline_tasks": totals.get("baseline_tasks"),
                "baseline_cost_usd": totals.get("baseline_cost_nano") / NANO,
                "baseline_remote_prompt_tokens": totals.get("baseline_prompt_tokens"),
                # Over the tasks that have a baseline only, so older tasks do not inflate it.
                "savings_factor": savings_factor(
                    totals.get("baseline_nano"), totals.get("baseline_cost_nano")
                ),
                "local_tokens": totals.get("local_tokens"),
                "remote_tokens": totals.get("remote_tokens"),
            },
            "latency": {
                "window": f"{len(series)} {bucket}s",
                "count": sum(latency.values()),
                "p50_s": percentile(latency, 0.5),
                "p95_s": percentile(latency, 0.95),
            },
            "queue": {
                "tasks_waiting": await self.store.tasks.queue_depth(),
                "jobs_waiting": sum(pool.waiting for pool in pools),
                "dead_lettered": sum(pool.dead_lettered for pool in pools),
            },
        }

    async def accuracy(self) -> dict[str, Any]:
        by_protocol = await self.store.usage.report("protocol")
        tasks = []
        points = []
        for protocol, counts in sorted(by_protocol.items()):
            graded = counts["graded"]
            cost_per_task = counts["cost_nano"] / NANO / counts["tasks"] if counts["tasks"] else 0.0
            row = {
                "protocol": protocol,
                "graded": graded,
                "exact_match_rate": counts["exact_match"] / graded if graded else None,
                "mean_f1": counts["f1_micro"] / 1_000_000 / graded if graded else None,
                "ci95": wilson_ci95(counts["exact_match"], graded),
                "cost_usd_per_task": cost_per_task,
            }
            tasks.append(row)
            if graded:
                points.append(
                    {
                        "source": "gateway tasks",
                        "protocol": protocol,
                        "accuracy": row["exact_match_rate"],
                        "ci95": row["ci95"],
                        "cost_usd": cost_per_task,
                    }
                )
        runs = await self.store.bench_runs.recent(BENCH_RUNS_SHOWN)
        for run in runs:
            for summary in run.get("summaries", []):
                if not summary.get("tasks"):
                    continue
                points.append(
                    {
                        "source": f"bench {run['id']}",
                        "protocol": summary["protocol"],
                        "accuracy": summary["accuracy"],
                        "ci95": summary["accuracy_ci95"],
                        "cost_usd": summary["remote_cost_usd"] / summary["tasks"],
                    }
                )
        return {
            "tasks": tasks,
            "bench_runs": [bench_run_view(run) for run in runs],
            # Per source: tasks of one bench dataset are not comparable with another's.
            "frontier": [
                point
                for source in dict.fromkeys(p["source"] for p in points)
                for point in mark_frontier([p for p in points if p["source"] == source])
            ],
        }

    async def information(self) -> dict[str, Any]:
        rows, points = await self.store.summary.mi()
        return {"rows": rows, "points": points}


def bench_run_view(run: dict[str, Any]) -> dict[str, Any]:
    summaries = run.get("summaries", [])
    return {
        "id": run["id"],
        "created_at": run["created_at"],
        "dataset": run.get("dataset", ""),
        "local_model": run.get("local_model", ""),
        "remote_model": run.get("remote_model", ""),
        "remote_stand_in": bool(run.get("remote_stand_in", False)),
        "protocols": [s["protocol"] for s in summaries],
        "tasks": sum(int(s.get("tasks", 0)) for s in summaries),
        "summaries": summaries,
    }
