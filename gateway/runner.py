"""Where queued tasks run. ``TaskRunner`` is the interface; ``InProcessRunner`` runs them in this
process with a fixed number of workers that take ids from the Redis queue (``BLMOVE`` into a
running list). A later runner consumes the same queue from other processes.

Nothing is lost on a clean shutdown: queued tasks stay in Redis, running ones are interrupted,
billed for what they used and put back at the head of the queue; ids a crashed process left in
the running list are re-queued at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from gateway.execution import TaskExecutor
from gateway.metrics import Metrics
from gateway.store import Store

logger = logging.getLogger(__name__)


class TaskRunner(Protocol):
    async def start(self) -> None: ...

    async def cancel(self, task_id: str, wait_s: float = 5.0) -> bool:
        """Abort a running task; True when it ran here and has stopped."""
        ...

    async def stop(self) -> None: ...

    @property
    def healthy(self) -> bool: ...


class InProcessRunner:
    def __init__(
        self, store: Store, executor: TaskExecutor, metrics: Metrics, concurrency: int = 4
    ) -> None:
        self.store = store
        self.executor = executor
        self.metrics = metrics
        self.concurrency = concurrency
        self._workers: list[asyncio.Task[None]] = []
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._reasons: dict[str, str] = {}
        self._stopping = False

    @property
    def healthy(self) -> bool:
        return (
            bool(self._workers)
            and not self._stopping
            and not all(worker.done() for worker in self._workers)
        )

    async def start(self) -> None:
        self._stopping = False
        orphans = await self.store.tasks.requeue_orphans()
        if orphans:
            logger.warning("re-queued %d tasks a previous process left running", len(orphans))
        self._workers = [
            asyncio.create_task(self._work(), name=f"mgw-worker-{n}")
            for n in range(self.concurrency)
        ]

    async def _work(self) -> None:
        while not self._stopping:
            try:
                task_id = await self.store.tasks.take(timeout_s=1)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("the task queue is unreachable; retrying in 1 s")
                await asyncio.sleep(1.0)
                continue
            if task_id is None:
                continue
            await self._run(task_id)

    async def _run(self, task_id: str) -> None:
        record = await self.store.tasks.get(task_id)
        if record is None or record.status != "queued":
            await self.store.tasks.done(task_id)
            return
        job = asyncio.create_task(
            self.executor.execute(record, lambda: self._reasons.get(task_id)),
            name=f"mgw-task-{task_id}",
        )
        self._jobs[task_id] = job
        self.metrics.running.inc()
        try:
            # ``wait`` returns when the job ends, also when a user cancelled it; it raises only
            # when this worker is cancelled (shutdown).
            await asyncio.wait({job})
        except asyncio.CancelledError:
            # The worker itself is being stopped: interrupt the task and let it clean up.
            if not job.done():
                self._reasons.setdefault(task_id, "shutdown")
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await job
            raise
        finally:
            if job.done() and not job.cancelled() and job.exception() is not None:
                logger.error("task %s crashed", task_id, exc_info=job.exception())
            self.metrics.running.dec()
            self._jobs.pop(task_id, None)
            self._reasons.pop(task_id, None)

    async def cancel(self, task_id: str, wait_s: float = 5.0) -> bool:
        job = self._jobs.get(task_id)
        if job is None:
            return False
        self._reasons[task_id] = "user"
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(job), timeout=wait_s)
        return job.done()

    async def stop(self) -> None:
        """Stop taking tasks; interrupt running ones (they go back to the queue)."""
        self._stopping = True
        for task_id in list(self._jobs):
            self._reasons.setdefault(task_id, "shutdown")
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
        self._workers = []
