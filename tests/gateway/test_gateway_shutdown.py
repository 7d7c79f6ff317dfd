"""``minions-gw serve`` as an operator's process manager drives it: SIGTERM and SIGINT end it with
status 0, its embedded redis-server stopped (checked by pid) and its URL record removed; after a
SIGKILL the orphaned server is refused to runners and stopped by the next ``serve``, data intact.
The data dir and the Redis files are owner-only; a second ``serve`` on one data dir is refused."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_helpers import ADMIN_KEY, auth
from support.processes import Processes, free_port, process_env

from service.store.connection import URL_FILE
from service.store.embedded import RECORD_FILE, _is_our_server, stop_orphan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# Engines only contacted on use: nothing here runs a model.
ENGINES = {"MGW_LOCAL_ENGINE": "openai", "MGW_LOCAL_BASE_URL": "http://127.0.0.1:9/v1"}


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.close()  # SIGKILL: a serve still running leaves its redis-server behind ...
    if (tmp_path / "data" / "redis").exists():
        stop_orphan(tmp_path / "data" / "redis")  # ... which is stopped here, as a serve would


def serve_env(data_dir: Path) -> dict[str, str]:
    return process_env(MGW_DATA_DIR=str(data_dir), MGW_ADMIN_KEY=ADMIN_KEY, **ENGINES)


async def start_serve(processes: Processes, data_dir: Path, name: str) -> tuple[str, int]:
    port = free_port()
    gateway = processes.cli(name, "serve", "--port", str(port), env=serve_env(data_dir))
    base = f"http://127.0.0.1:{port}"
    await asyncio.to_thread(gateway.wait_ready, base)
    record = json.loads((data_dir / "redis" / RECORD_FILE).read_text())
    return base, int(record["pid"])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_signal_exits_0_and_stops_the_embedded_redis(
    processes: Processes, tmp_path: Path, signum: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    _, redis_pid = await start_serve(processes, data_dir, "serve")
    redis_dir = data_dir / "redis"
    assert _is_our_server(redis_pid, redis_dir)
    assert (redis_dir / URL_FILE).exists()
    gateway = processes.started[-1]
    if signum == signal.SIGINT:  # the runner and worker commands stop cleanly on it too
        env = serve_env(data_dir)
        worker = processes.cli(
            "worker", "worker", "--engine", "openai", "--model", "m", "--name", "w", env=env
        )
        runner = processes.cli("runner", "runner", env=env)
        await asyncio.to_thread(worker.wait_for_line, "worker w:")
        await asyncio.to_thread(runner.wait_for_line, "runner runner-")
        assert worker.stop(signal.SIGINT) == 0, worker.output()
        assert runner.stop(signal.SIGINT) == 0, runner.output()
    if signum == signal.SIGTERM:  # (once is enough) never two servers on one AOF
        second = processes.cli(
            "second", "serve", "--port", str(free_port()), env=serve_env(data_dir)
        )
        assert second.popen.wait(timeout=60) == 1, second.output()
        assert "already runs the embedded Redis" in " ".join(second.output().split())
    assert gateway.stop(signum) == 0, gateway.output()
    assert not _is_our_server(redis_pid, redis_dir), "redis-server outlived serve"
    assert not (redis_dir / URL_FILE).exists() and not (redis_dir / RECORD_FILE).exists()
    # Owner-only files: every tenant's documents are in the AOF.
    assert mode(data_dir) == 0o700 and mode(redis_dir) == 0o700
    files = [p for p in redis_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("appendonly.aof") for p in files)
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


async def test_after_a_sigkill_the_orphan_is_refused_then_stopped_with_data_intact(
    processes: Processes, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    base, orphan = await start_serve(processes, data_dir, "first")
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        made = await http.post("/v1/admin/keys", json={"name": "kept"}, headers=auth(ADMIN_KEY))
        assert made.status_code == 201, made.text
        key = made.json()["key"]
    processes.started[-1].kill()  # SIGKILL: no cleanup at all
    redis_dir = data_dir / "redis"
    assert _is_our_server(orphan, redis_dir), "expected the orphan to survive a SIGKILL"

    # A runner must not attach to the orphan (its work would be lost when it is stopped).
    runner = processes.cli("runner", "runner", env=serve_env(data_dir))
    assert runner.popen.wait(timeout=60) == 2, runner.output()
    assert "is gone" in runner.output()

    base, fresh = await start_serve(processes, data_dir, "second")
    assert fresh != orphan and not _is_our_server(orphan, redis_dir)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        # The key written through the orphan survived (its AOF was flushed on SHUTDOWN).
        me = await http.get("/v1/tasks", headers=auth(key))
        assert me.status_code == 200, me.text
    assert processes.started[-1].stop() == 0
