"""What waiting for a replica costs a task submit: admissions/s and latency of
``TaskStore.create`` (the one Redis command of ``POST /v1/tasks``) against a primary with one
replica on 127.0.0.1, without WAIT and with ``WAIT 1`` (``MGW_SUBMIT_WAIT_REPLICAS=1``).

    PYTHONPATH=. .venv/bin/python benchmarks/submit_replication.py \
        [--submits 2000] [--clients 8] [--rounds 5]

The two settings take turns for ``--rounds`` rounds; each figure is the median of the rounds'.
``redis-server`` from PATH; both servers with AOF ``everysec``, as docs/deploy.md advises.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from service.store import Store
from service.store.connection import client_for
from service.store.tasks import ReplicaWait, TaskRecord, new_task_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(directory: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    directory.mkdir()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    command += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", *extra]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_in_sync(replica_port: int) -> None:
    for _ in range(200):
        try:
            with redis.Redis(port=replica_port, decode_responses=True) as replica:
                if replica.info("replication").get("master_link_status") == "up":
                    return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise SystemExit("the replica did not sync")


async def one_round(url: str, wait: ReplicaWait, submits: int, clients: int) -> dict[str, float]:
    store = Store(client_for(url), replica_wait=wait)
    try:
        key, _ = await store.api_keys.create("bench")
        latencies: list[float] = []

        async def client(count: int) -> None:
            for _ in range(count):
                record = TaskRecord(
                    id=new_task_id(),
                    key_id=key.id,
                    protocol="minions",
                    status="queued",
                    created_at=time.time(),
                    request={"question": "q", "documents": []},
                )
                started = time.perf_counter()
                admission = await store.tasks.create(record, enqueue=True)
                latencies.append(time.perf_counter() - started)
                assert admission.outcome == "created", admission

        started = time.perf_counter()
        await asyncio.gather(*(client(submits // clients) for _ in range(clients)))
        elapsed = time.perf_counter() - started
        latencies.sort()
        return {
            "submits_per_s": len(latencies) / elapsed,
            "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p90_ms": 1000 * latencies[int(len(latencies) * 0.9)],
        }
    finally:
        await store.redis.flushdb()
        await store.aclose()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="mgw-wait-"))
    primary_port, replica_port = free_port(), free_port()
    servers = [start_server(directory / "primary", primary_port)]
    servers.append(
        start_server(
            directory / "replica", replica_port, "--replicaof", "127.0.0.1", str(primary_port)
        )
    )
    try:
        wait_in_sync(replica_port)
        url = f"redis://127.0.0.1:{primary_port}/0"
        settings = {"no WAIT": ReplicaWait(0), "WAIT 1": ReplicaWait(1, 1000)}
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in settings}
        for _ in range(args.rounds):
            for name, wait in settings.items():
                rounds[name].append(await one_round(url, wait, args.submits, args.clients))
        summary: dict[str, Any] = {}
        for name, runs in rounds.items():
            summary[name] = {
                metric: round(statistics.median(run[metric] for run in runs), 2)
                for metric in runs[0]
            } | {"runs_submits_per_s": [round(run["submits_per_s"]) for run in runs]}
        ratio = summary["WAIT 1"]["submits_per_s"] / summary["no WAIT"]["submits_per_s"]
        summary["wait_over_no_wait"] = round(ratio, 3)
        return summary
    finally:
        for server in servers:
            server.kill()
            server.wait()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--submits", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    sys.stdout.write(json.dumps(asyncio.run(main(parser.parse_args())), indent=2) + "\n")
