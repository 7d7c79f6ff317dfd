"""Test-only launcher: a queue ``Worker`` around the scripted engine, as its own process.

    python -m support.queue_worker --redis-url URL --name NAME [--pool P] [--batch N]
        [--sentinels HOST:PORT,... --master NAME]
        [--delay SECONDS] [--fail-on TEXT] [--crash-on TEXT] [--timing JSON]
        [--studies --data-dir DIR [--extra-studies JSON] [--study-timing JSON]]

The engine echoes the last message (``echo <text>``), so every result can be checked against
its job. ``--delay`` makes each engine call take that long (to be killed while holding jobs);
``--fail-on`` raises an ``EngineError`` on prompts containing TEXT (a poison job);
``--crash-on`` kills the process on them (a poison job that takes its worker down).
``--studies`` runs a ``StudyConsumer`` beside the worker, as ``minions-gw worker --studies`` does.
Product code never imports this (``minions-gw worker`` builds real engines only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import redis.asyncio as aioredis

from analysis.studies import study_registry
from service.settings import parse_sentinels
from service.store.connection import client_for
from support.scripted_engine import SlowScriptedEngine
from workers.queue.jobs import QueueTiming
from workers.studies.consumer import StudyConsumer, StudyTiming
from workers.worker import Sidecar, Worker, run_until_signalled


async def main(args: argparse.Namespace) -> None:
    engine = SlowScriptedEngine(args.delay, args.crash_on, fail_on=args.fail_on)
    if args.sentinels:
        redis = client_for(
            args.redis_url, sentinels=parse_sentinels(args.sentinels), sentinel_master=args.master
        )
    else:
        redis = aioredis.Redis.from_url(args.redis_url, decode_responses=True)
    timing = QueueTiming(**json.loads(args.timing))
    worker = Worker(
        redis, engine, pool=args.pool, batch=args.batch, consumer_name=args.name, timing=timing
    )
    sidecars: list[Sidecar] = []
    if args.studies:
        sidecars.append(
            StudyConsumer(
                redis,
                Path(args.data_dir),
                registry=study_registry(json.loads(args.extra_studies)),
                name=args.name,
                timing=StudyTiming(**json.loads(args.study_timing)),
                may_start=lambda: worker.idle,
            )
        )
    try:
        await run_until_signalled(worker, *sidecars)
    finally:
        await redis.aclose()


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--sentinels", default=None, help="host:port,... of Redis Sentinels")
    parser.add_argument("--master", default="mymaster", help="the Sentinels' primary name")
    parser.add_argument("--pool", default="default")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--fail-on", default=None)
    parser.add_argument("--crash-on", default=None)
    parser.add_argument("--timing", default="{}", help="QueueTiming fields as JSON")
    parser.add_argument("--studies", action="store_true", help="also run queued studies")
    parser.add_argument("--data-dir", default=".", help="where study results are written")
    parser.add_argument("--extra-studies", default="{}", help="study name -> module, as JSON")
    parser.add_argument("--study-timing", default="{}", help="StudyTiming fields as JSON")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(main(parse()))
