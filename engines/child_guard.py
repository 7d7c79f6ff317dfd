"""Engine child processes die with the process that started them, however it dies.

vLLM runs its engine in child processes (``VLLM::EngineCore``, ``VLLM::Worker``), started by fork
or spawn depending on the platform. When their parent is SIGKILLed (the OOM killer's signal) they
are re-parented to init and keep the model's memory (on a GPU: the next worker cannot load its
model). A ``ChildGuard`` prevents that from the outside, whatever the start method:

* a small watchdog process (``python -I`` running this file: standard library only), in its own
  session, notices within ``POLL_S`` that its parent (the engine's owner) is gone, and SIGKILLs
  every descendant of the owner started after the guard that it has seen (it looks every
  ``SCAN_S``; pid *and* start time checked, so a reused pid is never touched);
* it records those descendants in ``<registry>/<owner pid>.json``; a guard starting on the same
  registry (the same data dir) first stops the processes of records whose owner is dead: engines
  left by a crash the watchdog could not handle (the watchdog killed too, a reboot of the
  container's init).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

POLL_S = 0.2  # how often the watchdog checks its parent
SCAN_S = 1.0  # how often it refreshes the list of descendants
_WATCHDOG = os.path.abspath(__file__)


class ChildGuard:
    """Starts the watchdog of this process's children; ``close`` stops it (a clean exit)."""

    def __init__(self, registry: Path) -> None:
        self.registry = registry
        registry.mkdir(parents=True, exist_ok=True, mode=0o700)
        stopped = reap_orphans(registry)
        if stopped:
            logger.warning(
                "stopped %d engine process(es) left running by a dead worker: %s",
                len(stopped),
                ", ".join(map(str, stopped)),
            )
        self._watchdog: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-I", _WATCHDOG, str(os.getpid()), str(registry)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a signal to our process group is not meant for it
        )

    @property
    def watchdog_pid(self) -> int | None:
        return self._watchdog.pid if self._watchdog is not None else None

    def close(self) -> None:
        """The owner shut its engine down itself: stop watching and forget the record."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        watchdog.terminate()
        try:
            watchdog.wait(timeout=5)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait(timeout=5)
        (self.registry / f"{os.getpid()}.json").unlink(missing_ok=True)


def reap_orphans(registry: Path) -> list[int]:
    """Kill the recorded descendants of owners that are gone; the pids killed."""
    killed: list[int] = []
    for record in registry.glob("*.json"):
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
            owner, owner_started = int(data["owner"]), int(data["owner_started"])
            children = {int(pid): int(started) for pid, started in data["children"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)
            continue
        if start_time(owner) == owner_started:
            continue  # its owner lives (and so does its watchdog, normally)
        killed += _kill_all(children)
        record.unlink(missing_ok=True)
    return killed


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks after boot), or None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root``: pid -> start time."""
    parents: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] in ("Z", "X"):
            continue
        parents.setdefault(int(fields[1]), []).append((int(entry.name), int(fields[19])))
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        for pid, started in parents.get(frontier.pop(), []):
            if pid not in found:
                found[pid] = started
                frontier.append(pid)
    return found


def _kill_all(children: dict[int, int]) -> list[int]:
    killed = []
    for pid, started in children.items():
        if start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def _write_record(path: Path, owner: int, owner_started: int, children: dict[int, int]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(
        json.dumps({"owner": owner, "owner_started": owner_started, "children": children}),
        encoding="utf-8",
    )
    temporary.replace(path)


def _watch(owner: int, registry: Path) -> int:
    owner_started = start_time(owner)
    if owner_started is None or os.getppid() != owner:
        return 1
    record = registry / f"{owner}.json"
    me = os.getpid()
    # Only what the owner starts from now on (its engine) is guarded: processes it started
    # before (the embedded redis-server of `serve`, which has its own shutdown) are left alone.
    since = start_time(me) or 0
    seen: dict[int, int] = {}
    stop = False

    def stopping(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, stopping)
    next_scan = 0.0
    while not stop:
        if os.getppid() != owner:  # re-parented: the owner died
            _kill_all(seen)  # (re-parented, the unseen ones are no longer found by tree)
            record.unlink(missing_ok=True)
            return 0
        now = time.monotonic()
        if now >= next_scan:
            current = {p: t for p, t in descendants(owner).items() if p != me and t >= since}
            if current.keys() - seen.keys() or len(current) != len(seen):
                seen = {pid: t for pid, t in (seen | current).items() if start_time(pid) == t}
                _write_record(record, owner, owner_started, seen)
            next_scan = now + SCAN_S
        time.sleep(POLL_S)
    return 0


if __name__ == "__main__":
    sys.exit(_watch(int(sys.argv[1]), Path(sys.argv[2])))
