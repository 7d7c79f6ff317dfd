"""Running one study in its own child process (``workers.studies.child``) and relaying what it
reports. The child is a ``python -m`` subprocess in its own session (a Ctrl-C or SIGTERM sent to
the worker's process group does not reach it: the worker decides its fate), sees the parent's
import path, and exits by itself when the parent dies (end of file on its stdin)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# A study's result (tables, metrics) comes back as one JSON line.
MAX_LINE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ChildSpec:
    study: str
    module: str
    params: dict[str, Any]
    out_dir: Path
    threads: int

    def to_line(self) -> bytes:
        spec = {
            "study": self.study,
            "module": self.module,
            "params": self.params,
            "out_dir": str(self.out_dir),
            "threads": self.threads,
        }
        return (json.dumps(spec) + "\n").encode()


@dataclass(frozen=True, slots=True)
class Outcome:
    result: dict[str, Any] | None = None
    error: str | None = None
    interrupted: bool = False  # stopped by the worker, not finished


def _child_env() -> dict[str, str]:
    # Like multiprocessing's spawn: the child imports from the same path as its parent (a study
    # module registered from a directory the parent added to sys.path must import there too).
    path = [entry for entry in sys.path if entry]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def _exit_description(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


async def run_child(
    spec: ChildSpec,
    on_progress: Callable[[dict[str, Any]], Awaitable[None]],
    stop: asyncio.Event,
    *,
    grace_s: float = 5.0,
) -> Outcome:
    """Run the study of ``spec`` in a child process until it ends, or until ``stop`` is set (the
    child is then terminated: SIGTERM, SIGKILL after ``grace_s``)."""
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.studies.child",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=_child_env(),
        start_new_session=True,
        limit=MAX_LINE_BYTES,
    )
    assert process.stdin is not None and process.stdout is not None
    logger.info("study %s: child process %d started", spec.study, process.pid)
    try:
        process.stdin.write(spec.to_line())
        await process.stdin.drain()
        reading = asyncio.create_task(_read_reports(process.stdout, on_progress))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not reading.done():
            logger.warning("study %s: stopping its child process %d", spec.study, process.pid)
            await _terminate(process, grace_s)
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            return Outcome(interrupted=True)
        stopping.cancel()
        final = reading.result()
        code = await process.wait()
        if final is not None and "result" in final:
            return Outcome(result=final["result"])
        if final is not None and "error" in final:
            return Outcome(error=str(final["error"]))
        return Outcome(error=f"the study's process {_exit_description(code)} without a result")
    finally:
        if process.returncode is None:  # cancelled (or failed) mid-way: never leave it behind
            await _terminate(process, grace_s)
        process.stdin.close()


async def _read_reports(
    stdout: asyncio.StreamReader, on_progress: Callable[[dict[str, Any]], Awaitable[None]]
) -> dict[str, Any] | None:
    """Relay progress reports; return the final message (None when the child ended without)."""
    while line := await stdout.readline():
        try:
            message = json.loads(line)
        except ValueError:
            logger.warning("study child wrote a line that is not JSON: %.200r", line)
            continue
        if not isinstance(message, dict):
            continue
        if "progress" in message and isinstance(message["progress"], dict):
            await on_progress(message["progress"])
        elif "result" in message or "error" in message:
            return message
    return None


async def _terminate(process: asyncio.subprocess.Process, grace_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), grace_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
