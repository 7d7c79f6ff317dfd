"""A Redis primary, one replica and three Sentinels as real processes on 127.0.0.1, for the
failover tests (``redis-server`` from PATH). Each writes its files under one directory."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from support.processes import free_port

MASTER_NAME = "mgw-test"


class SentinelTopology:
    def __init__(self, directory: Path, *, down_after_ms: int = 1000) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        self.directory = directory
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._start(binary, "primary", self.primary_port, [])
        self._start(
            binary,
            "replica",
            self.replica_port,
            ["--replicaof", "127.0.0.1", str(self.primary_port)],
        )
        for index, port in enumerate(self.sentinel_ports):
            config = directory / f"sentinel-{index}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            log = (directory / f"sentinel-{index}.log").open("wb")
            self._procs[f"sentinel-{index}"] = subprocess.Popen(
                [binary, str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_monitored()

    def _start(self, binary: str, name: str, port: int, extra: list[str]) -> None:
        data = self.directory / name
        data.mkdir()
        log = (self.directory / f"{name}.log").open("wb")
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
        command += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", *extra]
        self._procs[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    @property
    def sentinels(self) -> str:
        """The value of MGW_REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def primary_address(self) -> tuple[str, int] | None:
        """The primary the Sentinels name now (the first one that answers)."""
        for port in self.sentinel_ports:
            try:
                with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as sentinel:
                    found = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            if found:
                return str(found[0]), int(found[1])
        return None

    def _wait_until_monitored(self, timeout_s: float = 30.0) -> None:
        """Until the replica is in sync and every Sentinel knows the replica and the others."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with redis.Redis(port=self.replica_port, socket_timeout=1) as replica:
                    synced = replica.info("replication").get("master_link_status") == "up"
                ready = synced
                for port in self.sentinel_ports:
                    with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as s:
                        master = s.sentinel_master(MASTER_NAME)
                        ready = ready and int(master["num-slaves"]) == 1
                        ready = ready and int(master["num-other-sentinels"]) == 2
                if ready:
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the Sentinel topology did not settle in {timeout_s} s")

    def kill_primary(self) -> None:
        self._procs["primary"].kill()
        self._procs["primary"].wait(timeout=10)

    def wait_for_failover(self, timeout_s: float = 30.0) -> float:
        """Seconds until the Sentinels name the replica as primary and it accepts writes."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.primary_address() == ("127.0.0.1", self.replica_port):
                with redis.Redis(port=self.replica_port, socket_timeout=1) as promoted:
                    if promoted.info("replication").get("role") == "master":
                        return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"no failover within {timeout_s} s")

    def close(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
