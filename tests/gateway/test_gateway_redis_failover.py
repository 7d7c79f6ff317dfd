"""Redis high availability as real processes on 127.0.0.1: a primary, a replica and three
Sentinels; a gateway (HTTP + runner) and a queue worker that find the primary through the
Sentinels (MGW_REDIS_SENTINELS); tasks submitted before, during and after the primary is
SIGKILLed. The rule docs/deploy.md states: an acknowledged submit (202) is on the primary and, with
MGW_SUBMIT_WAIT_REPLICAS=1, on a replica too; after a failover every acknowledged task ends
``succeeded``, or is lost (404) only when it was acknowledged without a replica's copy."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_helpers import ADMIN_KEY, CODE_DOC, auth
from support.processes import Processes, free_port, process_env
from support.redis_queue import TEST_TIMING
from support.redis_sentinel import MASTER_NAME, SentinelTopology
from support.scripted_engine import ScriptedEngine

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

POOL = "ha"
BODY = {
    "protocol": "minions",
    "question": "What is the access code?",
    "documents": [{"text": CODE_DOC}],
    "options": {"chunking": "pages", "max_cost_usd": 0.5},
}


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    (tmp_path / "redis").mkdir()
    started = SentinelTopology(tmp_path / "redis")
    yield started
    started.close()


async def submit_during(
    client: httpx.AsyncClient, token: str, count: int, kill_after: int, kill: object
) -> tuple[list[str], int, float]:
    """Submit ``count`` tasks one after another; after ``kill_after`` acknowledged ones, call
    ``kill``. Returns the acknowledged ids, the refused/failed submits and the failover's s."""
    acknowledged: list[str] = []
    refused = 0
    failover_s = 0.0
    for _ in range(count):
        if len(acknowledged) == kill_after and not failover_s:
            failover_s = await asyncio.to_thread(kill)  # type: ignore[arg-type]
        try:
            response = await client.post("/v1/tasks", json=BODY, headers=auth(token))
        except httpx.HTTPError:
            refused += 1
            continue
        if response.status_code == 202:
            acknowledged.append(response.json()["id"])
        else:
            logger.warning("submit refused: %s %s", response.status_code, response.text[:300])
            refused += 1
        await asyncio.sleep(0.05)
    return acknowledged, refused, failover_s


async def outcomes(
    client: httpx.AsyncClient, token: str, ids: list[str], timeout_s: float
) -> dict[str, str]:
    """Each task's final status, or ``lost`` (404), polling until all ended."""
    deadline = time.monotonic() + timeout_s
    found: dict[str, str] = {}
    while True:
        for task_id in ids:
            if task_id in found:
                continue
            try:
                response = await client.get(f"/v1/tasks/{task_id}", headers=auth(token))
            except httpx.HTTPError:
                continue
            if response.status_code == 404:
                found[task_id] = "lost"
            elif response.status_code == 200 and response.json()["status"] in (
                "succeeded",
                "failed",
                "cancelled",
            ):
                found[task_id] = response.json()["status"]
        if len(found) == len(ids) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def test_a_primary_sigkilled_under_load_loses_no_acknowledged_task(
    processes: Processes,
    remote: tuple[str, ScriptedEngine],
    topology: SentinelTopology,
    tmp_path: Path,
) -> None:
    remote_url, _ = remote
    env = process_env(
        MGW_REDIS_SENTINELS=topology.sentinels,
        MGW_REDIS_SENTINEL_MASTER=MASTER_NAME,
        MGW_SUBMIT_WAIT_REPLICAS="1",
        MGW_DATA_DIR=str(tmp_path / "data"),
        MGW_ADMIN_KEY=ADMIN_KEY,
        MGW_LOCAL_ENGINE="openai",
        MGW_LOCAL_BASE_URL="http://127.0.0.1:9/v1",
        MGW_LOCAL_POOL=POOL,
        MGW_POOL_WAIT_S="60",
        MGW_REMOTE_BASE_URL=remote_url,
        MGW_REMOTE_MODEL="gpt-4o",
        MGW_REMOTE_API_KEY="test-remote-key",
        MGW_RUNNER_HEARTBEAT_S="0.5",
        MGW_RUNNER_CONCURRENCY="4",
        MGW_MI_ENABLED="false",
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = processes.cli("gateway", "serve", "--port", str(port), env=env)
    timing = json.dumps(dataclasses.asdict(TEST_TIMING))
    worker = [sys.executable, "-m", "support.queue_worker", "--redis-url", "redis://"]
    worker += ["--sentinels", topology.sentinels, "--master", MASTER_NAME, "--name", "ha-worker"]
    worker += ["--pool", POOL, "--delay", "0.3", "--timing", timing]
    processes.start("worker", worker, process_env())
    await asyncio.to_thread(gateway.wait_ready, url, 120)

    def kill_primary() -> float:
        topology.kill_primary()
        return topology.wait_for_failover()

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        made = await client.post(
            "/v1/admin/keys", json={"name": "ha", "budget_usd": 1000}, headers=auth(ADMIN_KEY)
        )
        assert made.status_code == 201, made.text
        token = made.json()["key"]
        acknowledged, refused, failover_s = await submit_during(client, token, 40, 12, kill_primary)
        assert failover_s > 0, (acknowledged, refused, gateway.output()[-3000:])
        ended = await outcomes(client, token, acknowledged, timeout_s=180)

    counts = {status: list(ended.values()).count(status) for status in set(ended.values())}
    logger.warning(
        "failover in %.1f s; %d submits acknowledged, %d refused or cut off; outcomes %s",
        failover_s,
        len(acknowledged),
        refused,
        counts,
    )
    assert len(acknowledged) >= 30, (refused, gateway.output()[-3000:])
    assert len(ended) == len(acknowledged), f"still running: {set(acknowledged) - set(ended)}"
    assert counts == {"succeeded": len(acknowledged)}, (counts, gateway.output()[-3000:])
    assert topology.primary_address() == ("127.0.0.1", topology.replica_port)
