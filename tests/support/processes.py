"""Starting gateway, runner and worker processes for tests, each logging to its own file, and
waiting on them by polling (never fixed sleeps)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from support.paths import REPO_ROOT

CLI = [sys.executable, "-m", "cli"]


def process_env(**extra: str) -> dict[str, str]:
    """This environment without ``MGW_*`` settings, plus ``extra``; tests/ importable. As in
    ``make_settings``, the remote budget is lifted: the tests' documents are a few lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGW_")}
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'tests'}"
    env["MGW_MAX_REMOTE_FRACTION"] = "1000"
    return env | extra


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Process:
    """A child process whose stdout and stderr go to ``log``."""

    def __init__(self, command: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.popen = subprocess.Popen(
                list(command), cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_for(self, check: Callable[[], bool], what: str, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if not self.alive():
                raise AssertionError(
                    f"exited ({self.popen.returncode}) before {what}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.output()}")
            time.sleep(0.05)

    def wait_for_line(self, text: str, timeout_s: float = 90.0) -> None:
        self.wait_for(lambda: text in self.output(), repr(text), timeout_s)

    def wait_ready(self, url: str, timeout_s: float = 90.0) -> None:
        def ready() -> bool:
            try:
                return httpx.get(f"{url}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait_for(ready, f"{url}/ready", timeout_s)

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Signal it and wait for its exit status."""
        if self.alive():
            self.popen.send_signal(signum)
        return self.popen.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
        self.popen.wait(timeout=30)


class Processes:
    """Every process a test started; ``close`` kills the survivors."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Process] = []

    def start(self, name: str, command: Sequence[str], env: dict[str, str]) -> Process:
        process = Process(command, env, self.directory / f"{name}.log")
        self.started.append(process)
        return process

    def cli(self, name: str, *args: str, env: dict[str, str]) -> Process:
        return self.start(name, [*CLI, *args], env)

    def close(self) -> None:
        for process in self.started:
            process.kill()
