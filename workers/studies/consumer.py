"""``StudyConsumer``: takes studies from the study stream, one at a time, and runs each in a
niced child process (``workers.studies.runner``). Workers run one beside their language-model
loop (``minions-gw worker --studies``); with no local pool the gateway runs one in-process.

- Low priority: a study is only taken when ``may_start()`` says so; a worker passes "the last
  read of my job stream was empty", so language-model jobs come first. The study then runs in
  its own process at nice 19 with few torch threads, and the worker goes on serving jobs.
- Heartbeat: every ``heartbeat_s`` the consumer re-claims the entry it holds (``XCLAIM ...
  JUSTID`` to itself, which resets its idle time without counting a delivery).
- Reclaim: an entry idle for three heartbeats belongs to a consumer that died (SIGKILL) or
  stalled; the next consumer to look (``XPENDING ... IDLE``, then ``XCLAIM`` guarded by the same
  min-idle, so exactly one wins) runs the study again from the start. A study delivered more
  than ``max_deliveries`` times fails: "the study was started 3 times and each worker ...".
- Stop (SIGTERM): the child is terminated and the study goes back to ``queued`` as a new stream
  entry, so it never stays ``running``; it starts over on the next consumer.
- A study that raises fails with its error; one whose process dies without a word (killed by
  the kernel, say) fails with how it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from workers import keys
from workers.streams import REDIS_DOWN, ConsumerGroup, Entry, retry_while_down
from workers.studies import figures
from workers.studies.runner import ChildSpec, Outcome, run_child
from workers.studies.store import StudyStore

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StudyTiming:
    heartbeat_s: float = 5.0
    poll_s: float = 1.0  # how often an idle consumer looks for a study
    max_deliveries: int = 3
    terminate_grace_s: float = 5.0  # SIGTERM to SIGKILL for a study's child
    progress_interval_s: float = 0.5  # progress reaches Redis at most this often

    @property
    def reclaim_after_ms(self) -> int:
        return max(1, round(3 * self.heartbeat_s * 1000))


def default_consumer_name(role: str = "gateway") -> str:
    host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname())
    return f"{role}-{host[:60] or 'host'}-{os.getpid()}-{secrets.token_hex(3)}"


class StudyConsumer:
    def __init__(
        self,
        redis: aioredis.Redis,
        data_dir: Path,
        *,
        registry: Mapping[str, str],
        name: str | None = None,
        threads: int = 1,
        timing: StudyTiming | None = None,
        may_start: Callable[[], bool] | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads: must be >= 1, got {threads}")
        self.store = StudyStore(redis)
        self.root = data_dir / "studies"
        self.registry = dict(registry)
        self.name = keys.check_name("study consumer", name or default_consumer_name())
        self.threads = threads
        self.timing = timing or StudyTiming()
        self.group = ConsumerGroup(
            redis,
            keys.STUDY_STREAM,
            keys.STUDY_GROUP,
            self.name,
            reclaim_after_ms=self.timing.reclaim_after_ms,
        )
        self._may_start = may_start or (lambda: True)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self.current: str | None = None  # the id of the study running now
        self.studies_run = 0

    def stop(self) -> None:
        """Stop taking studies; a running one is interrupted and queued again."""
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Look for a study now rather than at the next poll (a study was just queued)."""
        self._wake.set()

    async def run(self) -> None:
        await self._redis_step("create the study group", self.group.ensure)
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()  # a fresh consumer looks for lost studies at once
        logger.info("study consumer %s started", self.name)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                entry = None
                if self._may_start():
                    try:
                        if loop.time() >= next_sweep:
                            next_sweep = loop.time() + self.timing.heartbeat_s
                            entry = await self._reclaim_one()
                        entry = entry or await self._read_one()
                    except ResponseError:
                        logger.exception("reading the study stream failed")
                    except REDIS_DOWN as exc:
                        logger.warning("study stream: Redis unreachable (%s)", exc)
                if entry is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.timing.poll_s)
                    continue
                try:
                    await self._run_entry(
                        entry.entry_id, entry.fields.get("study", ""), entry.deliveries
                    )
                except (RedisError, OSError):
                    # Redis gone while stopping, or the child could not start: the entry stays
                    # pending, so it is reclaimed (and failed after max_deliveries).
                    logger.exception("study entry %s could not be run", entry.entry_id)
                    await asyncio.sleep(self.timing.poll_s)
                finally:
                    self.group.release(entry.entry_id)
        finally:
            await self._leave()

    # -- taking a study -----------------------------------------------------------------------
    async def _read_one(self) -> Entry | None:
        # No BLOCK: the decision to take a study is made now, when the worker is idle, and the
        # shared connection pool is not tied up by a blocking read.
        entries = await self.group.read(count=1)
        return entries[0] if entries else None

    async def _reclaim_one(self) -> Entry | None:
        """Take over one study whose consumer stopped renewing it (died or stalled)."""
        entry = await self.group.reclaim_one()
        if entry is not None:
            logger.warning(
                "study consumer %s reclaimed study %s from %s (delivery %d)",
                self.name,
                entry.fields.get("study"),
                entry.reclaimed_from,
                entry.deliveries,
            )
        return entry

    # -- running one --------------------------------------------------------------------------
    async def _run_entry(self, entry_id: str, study_id: str, deliveries: int) -> None:
        store = self.store
        record = await self._redis_step("read the study", lambda: store.get(study_id))
        if record is None or record.status in ("succeeded", "failed"):
            await self._redis_step("drop the entry", lambda: store.drop(entry_id))
            return
        if deliveries > self.timing.max_deliveries:
            error = (
                f"the study was started {deliveries - 1} times and each worker that ran it "
                "died or stalled"
            )
            logger.error("study %s: %s; failing it", study_id, error)
            await self._redis_step("fail the study", lambda: store.fail(study_id, entry_id, error))
            return
        module = self.registry.get(record.name)
        if module is None:
            error = (
                f"study {record.name!r} is not known to {self.name} (its MGW_EXTRA_STUDIES "
                "differs from the gateway's)"
            )
            await self._redis_step("fail the study", lambda: store.fail(study_id, entry_id, error))
            return
        await self._redis_step(
            "start the study",
            lambda: store.update(
                study_id, status="running", started_at=time.time(), worker=self.name, progress={}
            ),
        )
        self.current = study_id
        logger.info("study %s (%s) started on %s", study_id, record.name, self.name)
        out_dir = self.root / study_id
        spec = ChildSpec(record.name, module, record.params, out_dir, self.threads)
        latest: dict[str, Any] = {}
        beating = asyncio.create_task(self._renew(entry_id))
        try:
            outcome = await run_child(
                spec,
                self._progress_relay(study_id, latest),
                self._stop,
                grace_s=self.timing.terminate_grace_s,
            )
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
            self.current = None
        self.studies_run += 1
        await self._settle(study_id, entry_id, record.name, out_dir, outcome, latest)

    async def _settle(
        self,
        study_id: str,
        entry_id: str,
        name: str,
        out_dir: Path,
        outcome: Outcome,
        progress: dict[str, Any],
    ) -> None:
        store = self.store
        if outcome.interrupted:
            logger.warning("study %s interrupted (consumer stopping); queued again", study_id)
            await self._redis_step("requeue the study", lambda: store.requeue(study_id, entry_id))
        elif outcome.result is None:
            error = outcome.error or "the study ended without a result"
            logger.error("study %s (%s) failed: %s", study_id, name, error)
            await self._redis_step("fail the study", lambda: store.fail(study_id, entry_id, error))
        else:
            result = dict(outcome.result)
            listed = result.get("figures", [])
            stored, skipped = await asyncio.to_thread(
                figures.collect, out_dir, listed if isinstance(listed, list) else []
            )
            if skipped:
                result["figures_skipped"] = skipped
            await self._redis_step(
                "store the result",
                lambda: store.succeed(study_id, entry_id, result, stored, dict(progress)),
            )
            logger.info("study %s (%s) succeeded", study_id, name)

    def _progress_relay(
        self, study_id: str, latest: dict[str, Any]
    ) -> Callable[[dict[str, Any]], Awaitable[None]]:
        loop = asyncio.get_running_loop()
        last_write = -float("inf")

        async def relay(progress: dict[str, Any]) -> None:
            nonlocal last_write
            latest.clear()
            latest.update(progress)
            if loop.time() - last_write < self.timing.progress_interval_s:
                return
            last_write = loop.time()
            try:
                await self.store.update(study_id, progress=dict(latest))
            except (RedisError, OSError) as exc:  # progress is best effort; the end is not
                logger.warning("study %s: progress not recorded (%s)", study_id, exc)

        return relay

    async def _renew(self, entry_id: str) -> None:
        while True:
            await asyncio.sleep(self.timing.heartbeat_s)
            try:
                await self.group.renew([entry_id])
            except (RedisError, OSError) as exc:
                logger.warning("renewing study entry %s failed (%s)", entry_id, exc)

    # -- leaving ------------------------------------------------------------------------------
    async def _leave(self) -> None:
        """Drop the consumer from the group when it holds nothing."""
        try:
            await self.group.leave()
        except (RedisError, OSError) as exc:
            logger.warning("study consumer %s left without cleaning up (%s)", self.name, exc)
        logger.info("study consumer %s stopped after %d study(ies)", self.name, self.studies_run)

    async def _redis_step(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """Retry a Redis step while the server is unreachable (a restart). When stopping, give up
        after three heartbeats: the entry stays pending and is reclaimed."""
        return await retry_while_down(
            what, step, stopping=self._stop.is_set, give_up_after_s=3 * self.timing.heartbeat_s
        )
