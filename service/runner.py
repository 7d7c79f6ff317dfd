"""Where queued tasks run. ``TaskRunner`` is the interface; ``InProcessRunner`` runs them in this
process: ``concurrency`` loops read task ids from the task stream (``keys.TASK_STREAM``) through
the consumer group ``keys.RUNNER_GROUP`` (``XREADGROUP``), so any number of gateway processes
share one queue and each task runs on one of them.

- Heartbeat: every ``heartbeat_s`` a runner re-claims the entries it holds (``XCLAIM`` to itself,
  ``JUSTID``), which resets their idle time.
- Reclaim: an entry idle for three heartbeats belongs to a runner that died (or stalled); the
  next runner to look (``XPENDING ... IDLE``, then ``XCLAIM`` guarded by the same min-idle, so
  exactly one wins) runs the task again. Its remote replies and local job results were recorded
  per call (``service.checkpoint``, ``workers.queue``), so what the dead run paid for is reused.
- A task delivered more than ``max_deliveries`` times (every runner that took it died) is failed.
- Clean shutdown: running tasks are interrupted, billed for what they used and queued again as a
  new entry; queued ones stay in the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Coroutine
from typing import Any, Protocol

from redis.exceptions import ResponseError

from service import keys
from service.execution import TaskExecutor
from service.metrics import Metrics
from service.store import TERMINAL, Store
from workers.streams import ConsumerGroup, Entry

logger = logging.getLogger(__name__)


class TaskRunner(Protocol):
    async def start(self) -> None: ...

    async def cancel(self, task_id: str, wait_s: float = 5.0) -> bool:
        """Abort a running task; True when it ran here and has stopped."""
        ...

    async def stop(self) -> None: ...

    @property
    def healthy(self) -> bool: ...


class ExternalRunners:
    """The ``TaskRunner`` of an HTTP-only gateway (``MGW_RUNNER_ENABLED=false``): separate
    ``minions-gw runner`` processes read the same task stream, so nothing runs here."""

    async def start(self) -> None:
        logger.info("this gateway runs no tasks: minions-gw runner processes run them")

    async def cancel(self, task_id: str, wait_s: float = 5.0) -> bool:
        return False

    async def stop(self) -> None:
        return None

    @property
    def healthy(self) -> bool:
        # Serving HTTP does not depend on a runner here; a queued task waits for one.
        return True


RECANCEL_S = 1.0


async def cancel_until_done(task: asyncio.Task[Any], timeout_s: float | None = None) -> None:
    """Cancel ``task`` and wait for it to end, cancelling it again while it runs on.

    A single ``cancel()`` is not enough: redis-py (8.1, Python 3.11) sometimes swallows the
    ``CancelledError`` delivered while a command is in flight (measured: ~1-2% of cancels of a
    loop of ``XREAD BLOCK`` calls), and the task carries on as if never cancelled, e.g. a
    ``QueuedEngine`` waiting for its workers. Waiting on such a task once would hang a shutdown;
    cancelling again reaches it at its next await. The pause between cancels leaves a task that
    did get it time to clean up (write its end); one cut short leaves its entry held, so another
    runner reclaims it: nothing is lost."""
    deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
    while not task.done():
        task.cancel()
        wait_s = RECANCEL_S
        if deadline is not None:
            wait_s = min(wait_s, deadline - asyncio.get_running_loop().time())
            if wait_s <= 0:
                return
        await asyncio.wait({task}, timeout=wait_s)


def default_runner_name() -> str:
    host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname())
    return f"runner-{host[:60] or 'host'}-{os.getpid()}-{secrets.token_hex(3)}"


class InProcessRunner:
    def __init__(
        self,
        store: Store,
        executor: TaskExecutor,
        metrics: Metrics,
        concurrency: int = 4,
        *,
        heartbeat_s: float = 5.0,
        max_deliveries: int = 3,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.metrics = metrics
        self.concurrency = concurrency
        self.heartbeat_s = heartbeat_s
        self.max_deliveries = max_deliveries
        self.name = keys.check_name("runner", name or default_runner_name())
        self.reclaimed = 0
        self.group = ConsumerGroup(
            store.redis,
            keys.TASK_STREAM,
            keys.RUNNER_GROUP,
            self.name,
            reclaim_after_ms=max(1, round(3 * heartbeat_s * 1000)),
        )
        self._workers: list[asyncio.Task[None]] = []
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, str] = {}  # task id -> stream entry id
        self._tokens: dict[str, str] = {}  # task id -> fencing token of this runner's run
        self._reasons: dict[str, str] = {}
        self._cancelling: set[asyncio.Task[object]] = set()
        self._stopping = False

    @property
    def reclaim_after_ms(self) -> int:
        return self.group.reclaim_after_ms

    @property
    def healthy(self) -> bool:
        return (
            bool(self._workers)
            and not self._stopping
            and not all(worker.done() for worker in self._workers)
        )

    async def start(self) -> None:
        self._stopping = False
        await self.group.ensure()
        self._workers = [
            asyncio.create_task(self._work(n), name=f"mgw-runner-{n}")
            for n in range(self.concurrency)
        ]
        self._workers.append(asyncio.create_task(self._heartbeat(), name="mgw-runner-heartbeat"))

    # -- taking tasks -----------------------------------------------------------------------
    async def _work(self, n: int) -> None:
        # Spread the reclaim sweeps of the loops over one heartbeat.
        next_sweep = asyncio.get_running_loop().time() + self.heartbeat_s * n / self.concurrency
        while not self._stopping:
            try:
                entry = None
                if asyncio.get_running_loop().time() >= next_sweep:
                    next_sweep = asyncio.get_running_loop().time() + self.heartbeat_s
                    entry = await self._reclaim_one()
                if entry is None:
                    entry = await self._read_one()
            except asyncio.CancelledError:
                raise
            except ResponseError:
                logger.exception("reading the task stream failed; retrying in 1 s")
                await asyncio.sleep(1.0)
                continue
            except Exception:
                logger.exception("the task queue is unreachable; retrying in 1 s")
                await asyncio.sleep(1.0)
                continue
            if entry is not None:
                try:
                    await self._run(entry.entry_id, entry.fields.get("task", ""), entry.deliveries)
                finally:
                    self.group.release(entry.entry_id)

    async def _read_one(self) -> Entry | None:
        block_ms = max(1, min(1000, round(self.heartbeat_s * 1000)))
        entries = await self.group.read(count=1, block_ms=block_ms)
        return entries[0] if entries else None

    async def _reclaim_one(self) -> Entry | None:
        """Take over one entry whose runner stopped renewing it (died or stalled)."""
        entry = await self.group.reclaim_one()
        if entry is not None:
            self.reclaimed += 1
            logger.warning(
                "reclaimed task %s from runner %s (delivery %d)",
                entry.fields.get("task"),
                entry.reclaimed_from,
                entry.deliveries,
            )
        return entry

    async def _heartbeat(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.heartbeat_s)
            if not self._held:
                continue
            try:
                await self._stop_superseded()
                await self.group.renew(self._held.values())
                await self._cancel_requested_elsewhere()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("renewing the held tasks failed")

    async def _stop_superseded(self) -> None:
        """A run whose task another runner took over (this one stalled past the reclaim time)
        stops: its fencing token is no longer the task's, so its end would be refused anyway."""
        task_ids = [t for t in self._held if t in self._tokens and t not in self._reasons]
        if not task_ids:
            return
        current = await self._task_field(task_ids, "run_token")
        for task_id, token in zip(task_ids, current, strict=True):
            if token != self._tokens.get(task_id) and task_id in self._jobs:
                logger.warning("task %s: another runner took it over; this run stops", task_id)
                self._reasons[task_id] = "superseded"
                self._held.pop(task_id, None)  # never renewed (claimed back) again
                self._in_background(cancel_until_done(self._jobs[task_id]))

    async def _cancel_requested_elsewhere(self) -> None:
        """A ``DELETE`` served by another gateway process can only flag the task: the runner
        running it sees the flag here, once a heartbeat, and aborts it as if cancelled here."""
        task_ids = [task_id for task_id in self._jobs if task_id not in self._reasons]
        if not task_ids:
            return
        flags = await self._task_field(task_ids, "cancel_requested")
        for task_id, flag in zip(task_ids, flags, strict=True):
            if flag == "1" and task_id in self._jobs and task_id not in self._reasons:
                logger.info("task %s: cancel requested through another gateway", task_id)
                self._in_background(self.cancel(task_id))

    async def _task_field(self, task_ids: list[str], name: str) -> list[str | None]:
        """One field of each task's record, in one round trip."""
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hget(keys.task(task_id), name)
            values: list[str | None] = await pipe.execute()
        return values

    def _in_background(self, stopping: Coroutine[Any, Any, object]) -> None:
        """Run a cancellation without waiting for it, holding it until it ends (the loop keeps
        only weak references to tasks)."""
        task = asyncio.create_task(stopping)
        self._cancelling.add(task)
        task.add_done_callback(self._cancelling.discard)

    # -- running one ------------------------------------------------------------------------
    async def _run(self, entry_id: str, task_id: str, deliveries: int) -> None:
        record = await self.store.tasks.get(task_id) if task_id else None
        if record is None or record.status in TERMINAL:
            await self.store.tasks.done(entry_id)
            return
        if deliveries > self.max_deliveries:
            logger.error("task %s: delivered %d times; failing it", task_id, deliveries)
            await self.executor.fail_undeliverable(record, entry_id, deliveries)
            return
        token = secrets.token_hex(8)
        job = asyncio.create_task(
            self.executor.execute(
                record, lambda: self._reasons.get(task_id), entry_id, run_token=token
            ),
            name=f"mgw-task-{task_id}",
        )
        self._jobs[task_id] = job
        self._held[task_id] = entry_id
        self._tokens[task_id] = token
        self.metrics.running.inc()
        try:
            # ``wait`` returns when the job ends, also when a user cancelled it; it raises only
            # when this loop is cancelled (shutdown).
            await asyncio.wait({job})
        except asyncio.CancelledError:
            # The runner itself is being stopped: interrupt the task and let it clean up.
            if not job.done():
                self._reasons.setdefault(task_id, "shutdown")
                await cancel_until_done(job)
            raise
        finally:
            if job.done() and not job.cancelled() and job.exception() is not None:
                logger.error("task %s crashed", task_id, exc_info=job.exception())
            self.metrics.running.dec()
            if self._jobs.get(task_id) is job:  # not a later run of the same task
                del self._jobs[task_id]
                self._held.pop(task_id, None)
                self._reasons.pop(task_id, None)
                self._tokens.pop(task_id, None)

    async def cancel(self, task_id: str, wait_s: float = 5.0) -> bool:
        job = self._jobs.get(task_id)
        if job is None:
            return False
        self._reasons[task_id] = "user"
        await cancel_until_done(job, timeout_s=wait_s)
        return job.done()

    async def stop(self) -> None:
        """Stop taking tasks; interrupt running ones (they go back to the queue)."""
        self._stopping = True
        for task_id in list(self._jobs):
            self._reasons.setdefault(task_id, "shutdown")
        # The loops first, so none reads another entry (e.g. a task just put back); each one
        # running a task interrupts it. Then, for cancels redis-py swallowed, again until done.
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*(cancel_until_done(job) for job in list(self._jobs.values())))
        for worker in self._workers:
            await cancel_until_done(worker)
        self._workers = []
        with contextlib.suppress(Exception):
            await self.group.leave()
