"""Running one task: build the protocol over metered engines, stream its events into the task's
Redis Stream, then settle the budget, record usage and store the Result (or the error).

The runner calls ``execute`` for queued tasks; chat completions call ``run_inline``. Both bill
what a task consumed, also when it fails or is cancelled half-way. A task's end is written in one
transaction: record, budget, usage, its last event and its place in the running list together.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from analysis.answer_scoring import grade
from engines.errors import EngineError
from engines.prices import PriceTable
from protocols import Options, Result, Task, build_protocol
from protocols.accounting import EventSink
from protocols.base import Protocol
from protocols.privacy.config import PrivacyConfig
from service.checkpoint import CheckpointedEngine
from service.errors import InvalidRequest, describe
from service.event_writer import EventWriter
from service.metering import MeteredEngine
from service.metrics import Metrics
from service.mi_background import TaskMIJob
from service.pool import EnginePool
from service.store import Store, TaskRecord
from service.store.api_keys import to_nano
from service.store.summary import Settled

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """One protocol run over metered engines."""

    protocol: Protocol
    local: MeteredEngine
    remote: MeteredEngine

    @property
    def spent_nano(self) -> int:
        return to_nano(self.remote.cost_usd)

    def billing_fields(self) -> dict[str, Any]:
        """What the task record says about billing beyond the numbers: an overrun, renames."""
        fields: dict[str, Any] = {}
        if self.remote.overrun:
            fields["budget_overrun"] = 1
        if self.remote.reply_models:
            fields["reply_models"] = sorted(self.remote.reply_models)
        return fields

    def partial_usage(self) -> dict[str, Any]:
        return {
            "local": self.local.usage.to_dict(),
            "remote": self.remote.usage.to_dict(),
            "local_requests": self.local.requests,
            "remote_requests": self.remote.requests,
            "cost_usd": self.remote.cost_usd,
        }

    def counters(self) -> dict[str, int]:
        local, remote = self.local.usage, self.remote.usage
        return {
            "local_prompt_tokens": local.prompt_tokens,
            "local_completion_tokens": local.completion_tokens,
            "remote_prompt_tokens": remote.prompt_tokens,
            "remote_completion_tokens": remote.completion_tokens,
            "cost_nano": self.spent_nano,
        }


@dataclass
class Ending:
    """How a task ended: what to write about it, all at once."""

    status: str | None  # None: back to the queue (shutdown)
    fields: dict[str, Any]
    event: tuple[str, dict[str, Any]] | None
    release_nano: int
    accuracy: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None  # Result.baseline: what remote-only would have cost


class TaskExecutor:
    def __init__(
        self,
        store: Store,
        pool: EnginePool,
        prices: PriceTable,
        metrics: Metrics,
        privacy: PrivacyConfig | None = None,
    ) -> None:
        self.store = store
        self.privacy = privacy
        self.pool = pool
        self.prices = prices
        self.metrics = metrics
        self.mi = TaskMIJob(store, pool)
        self._background: set[asyncio.Task[None]] = set()
        self._cancel_at_shutdown: set[asyncio.Task[None]] = set()

    def prepare(
        self,
        protocol: str,
        remote_model: str | None,
        cap_usd: float | None,
        task_id: str | None = None,
    ) -> Run:
        """The protocol over metered engines. With a ``task_id`` (a queued task) remote replies
        are checkpointed, so a restart of the task does not pay for them twice."""
        choice = self.pool.remote(remote_model)
        remote_engine, stand_in = choice.engine, choice.stand_in
        local_engine = self.pool.local_for(self.store.redis, task_id)
        if stand_in:
            remote_engine = local_engine
        if task_id is not None:
            remote_engine = CheckpointedEngine(remote_engine, self.store.redis, task_id)
        local = MeteredEngine(local_engine, self.prices, priced=False)
        remote = MeteredEngine(remote_engine, self.prices, priced=not stand_in, cap_usd=cap_usd)
        built = build_protocol(
            protocol,
            local,
            remote,
            self.prices,
            remote_stand_in=stand_in,
            max_remote_fraction=self.pool.settings.max_remote_fraction,
            privacy_config=self.privacy,
            # Counted as values cross, so a failed or cancelled task's are counted too.
            privacy_crossed=self.metrics.pii_crossed,
        )
        return Run(built, local, remote)

    async def require_local_workers(self) -> None:
        """With ``MGW_LOCAL_POOL``, wait for a live worker of the pool (``MGW_POOL_WAIT_S``),
        then fail (``NoLiveWorkerError``) rather than let the protocol drop every local job."""
        await self.pool.wait_for_workers(self.store.redis)

    # -- queued tasks -----------------------------------------------------------------------
    async def execute(
        self,
        record: TaskRecord,
        cancel_reason: Callable[[], str | None],
        entry_id: str,
        *,
        run_token: str | None = None,
    ) -> None:
        """Run a queued task to a final status (or back to the queue on shutdown). ``entry_id``
        is its entry in the task stream, acknowledged with the task's end. A task still marked
        running was reclaimed from a runner that died: it starts again, reusing what that run
        recorded. ``run_token`` fences the run: only the run whose token the task holds writes
        its end (a stalled runner whose task was taken over writes nothing)."""
        run_token = run_token or secrets.token_hex(8)
        started = time.time()
        moved = await self.store.tasks.transition(
            record.id,
            ("queued", "running"),
            {
                "status": "running",
                "started_at": started,
                "attempts": record.attempts + 1,
                "run_token": run_token,
            },
        )
        if moved is not True:
            await self.store.tasks.done(entry_id)
            return
        record.started_at = started
        record.run_token = run_token
        request = record.request
        run: Run | None = None
        events = EventWriter(self.store, record.id)
        try:
            task = await self._load_task(record)
            await self.require_local_workers()
            run = self.prepare(
                record.protocol, request.get("remote_model"), _cap(record), task_id=record.id
            )
            result = await run.protocol.run(task, events=self._holding_final(events))
        except asyncio.CancelledError:
            await events.close()
            ending = self._interrupted(record, run, cancel_reason())
            await self._finish(record, run, ending, entry_id)
            raise
        except Exception as exc:
            await events.close()
            await self._finish(record, run, self._failed(record, run, exc), entry_id)
            return
        await events.close()
        if result.error is not None:
            # The protocol could not finish (its local model failed): a failed task whose usage
            # so far is billed, like any other failure.
            failure = EngineError(result.error)
            await self._finish(record, run, self._failed(record, run, failure), entry_id)
            return
        ending = self._succeeded(record, result)
        scored = self.mi.wanted(record.protocol)
        if scored:
            ending.fields["mi"] = self.mi.pending()
        await self._finish(record, run, ending, entry_id)
        if scored:
            # Only now, with the answer and its final event written: scoring never delays them.
            f1 = float(ending.accuracy["f1"]) if ending.accuracy else None
            self._spawn(self.mi.run(record.id, task, result, f1), cancel_at_shutdown=True)

    @staticmethod
    def _holding_final(events: EventWriter) -> EventSink:
        """The protocol's ``final`` event is written with the record that says succeeded."""

        async def sink(event_type: str, data: dict[str, Any]) -> None:
            if event_type != "final":
                await events.emit(event_type, data)

        return sink

    async def _load_task(self, record: TaskRecord) -> Task:
        request = record.request
        stored = await self.store.documents.get_many(list(request["document_ids"]))
        missing = [i for i, doc in zip(request["document_ids"], stored, strict=True) if not doc]
        if missing:
            raise InvalidRequest(f"documents: {missing[0]} is no longer stored", param="documents")
        return Task(
            question=request["question"],
            documents=tuple(doc.document for doc in stored if doc is not None),
            metadata=request.get("metadata", {}),
            options=Options(**request.get("options", {})),
        )

    def _succeeded(self, record: TaskRecord, result: Result) -> Ending:
        fields: dict[str, Any] = {"status": "succeeded", "result": result.model_dump(mode="json")}
        accuracy = None
        reference = record.request.get("reference_answer")
        if reference:
            accuracy = grade(result.answer, reference)
            fields["accuracy"] = accuracy
        final = {
            "task_id": record.id,
            "answer": result.answer,
            "usage": result.usage.model_dump(exclude={"remote_calls", "local_calls"}),
            "cost_usd": result.cost_usd.model_dump(),
            "warnings": result.warnings,
        }
        return Ending(
            "succeeded",
            fields,
            ("final", final),
            record.reserved_nano,
            accuracy,
            baseline_of(result),
        )

    def _failed(self, record: TaskRecord, run: Run | None, exc: Exception) -> Ending:
        status_code, type_, message, param = describe(exc)
        if status_code >= 500:
            logger.error("task %s failed: %s", record.id, type(exc).__name__, exc_info=exc)
        error = {"type": type_, "message": message, **({"param": param} if param else {})}
        fields = {
            "status": "failed",
            "error": error,
            "partial_usage": run.partial_usage() if run else None,
        }
        return Ending("failed", fields, ("error", error), record.reserved_nano)

    def _interrupted(self, record: TaskRecord, run: Run | None, reason: str | None) -> Ending:
        partial = run.partial_usage() if run else None
        if reason == "superseded":
            # Another runner owns the task now; the fence refuses this run's end (_finish).
            return Ending(None, {}, None, 0)
        if reason == "shutdown":
            # Bill what was spent, keep the rest reserved, and put the task back in the queue.
            spent = run.spent_nano if run else 0
            fields = {"status": "queued", "reserved_nano": max(0, record.reserved_nano - spent)}
            logger.info("task %s goes back to the queue at shutdown", record.id)
            return Ending(None, fields, None, spent)
        fields = {"status": "cancelled", "partial_usage": partial}
        event = ("cancelled", {"task_id": record.id, "partial_usage": partial})
        return Ending("cancelled", fields, event, record.reserved_nano)

    async def fail_undeliverable(self, record: TaskRecord, entry_id: str, deliveries: int) -> None:
        """A task whose runners kept dying (a poison task): fail it instead of retrying again."""
        error = EngineError(
            f"the task was started {deliveries - 1} times and each runner that ran it died or "
            "stalled; it is not retried again"
        )
        await self._finish(record, None, self._failed(record, None, error), entry_id)

    async def _finish(
        self, record: TaskRecord, run: Run | None, ending: Ending, entry_id: str
    ) -> None:
        finished = time.time()
        if ending.status is not None:
            ending.fields["finished_at"] = finished
        spent = run.spent_nano if run else 0
        if run is not None:
            ending.fields |= run.billing_fields()
        store = self.store

        async def write(pipe: Any) -> None:
            store.tasks.queue_update(pipe, record.id, ending.fields)
            if spent:
                store.tasks.queue_add_billed(pipe, record.id, spent)
            await store.api_keys.queue_settle(pipe, record.key_id, ending.release_nano, spent)
            await self._queue_usage(
                pipe, record.key_id, record.protocol, ending, run, finished, record.created_at
            )
            if ending.status is not None:
                store.tasks.queue_index_settled(pipe, record.id, record.protocol, ending.status)
            if ending.event is not None:
                store.events.queue_append(pipe, record.id, *ending.event)
            if ending.status is None:
                store.tasks.queue_requeue(pipe, record.id, entry_id)
            else:
                store.tasks.queue_done(pipe, entry_id)
                store.tasks.queue_forget_checkpoints(pipe, record.id)
                settings = self.pool.settings
                store.tasks.queue_expire(pipe, record.id, settings.task_ttl_s)
                store.documents.queue_touch(
                    pipe, record.request.get("document_ids", []), settings.document_ttl_s
                )

        # The fence: only the run that owns the task (its token) ends it, settling once.
        if not await store.tasks.fenced_write(record.id, record.run_token, write):
            logger.warning(
                "task %s: another runner took it over; this run's end (%s, $%.6f) is not "
                "written: the task is settled once, by the run that owns it",
                record.id,
                ending.status or "requeue",
                spent / 1e9,
            )
            return
        if ending.status is not None:
            started = record.started_at or record.created_at
            self.metrics.task_finished(record.protocol, ending.status, finished - started)
        if run is not None:
            self._note_overrun(record.id, record.protocol, run)

    def _note_overrun(self, task_id: str | None, protocol: str, run: Run) -> None:
        if not run.remote.overrun:
            return
        self.metrics.budget_overruns.labels(protocol).inc()
        logger.warning(
            "task %s: budget_overrun: the remote reported usage costing $%.6f, more than the "
            "$%.6f reserved; billed as reported",
            task_id or "(chat)",
            run.remote.cost_usd,
            run.remote.cap_usd or 0.0,
        )

    async def _queue_usage(
        self,
        pipe: Any,
        key_id: str,
        protocol: str,
        ending: Ending,
        run: Run | None,
        finished: float,
        created: float | None,
    ) -> None:
        """Usage by key, protocol and day, and the dashboard's time-bucketed summary."""
        counters: dict[str, int] = {}
        if ending.status is not None:
            counters |= {"tasks": 1, ending.status: 1}
        if run is not None:
            counters |= run.counters()
            local, remote = run.local.usage, run.remote.usage
            self.metrics.usage(
                protocol,
                (local.prompt_tokens, local.completion_tokens),
                (remote.prompt_tokens, remote.completion_tokens),
                run.remote.cost_usd,
            )
        if ending.accuracy is not None:
            counters |= {
                "graded": 1,
                "exact_match": int(bool(ending.accuracy["exact_match"])),
                "f1_micro": round(float(ending.accuracy["f1"]) * 1_000_000),
            }
        baseline = baseline_counters(ending.baseline)
        if "baseline_nano" in baseline:  # priced: its spend is what the savings factor divides
            baseline["baseline_cost_nano"] = counters.get("cost_nano", 0)
        counters |= baseline
        if counters:
            await self.store.usage.queue_add(
                pipe, key_id=key_id, protocol=protocol, finished_at=finished, counters=counters
            )
        if ending.status is not None or run is not None:
            settled = Settled(
                protocol=protocol,
                status=ending.status,
                finished_at=finished,
                latency_s=finished - created if created is not None else None,
                local_tokens=counters.get("local_prompt_tokens", 0)
                + counters.get("local_completion_tokens", 0),
                remote_tokens=counters.get("remote_prompt_tokens", 0)
                + counters.get("remote_completion_tokens", 0),
                cost_nano=counters.get("cost_nano", 0),
                baseline_nano=baseline.get("baseline_nano") if baseline else None,
                baseline_prompt_tokens=baseline.get("baseline_prompt_tokens", 0),
            )
            await self.store.summary.queue_settled(pipe, settled)

    # -- chat completions -----------------------------------------------------------------
    async def run_inline(
        self,
        *,
        key_id: str,
        protocol: str,
        task: Task,
        remote_model: str | None,
        reserved_nano: int,
        cap_usd: float | None,
        sink: EventSink | None = None,
    ) -> Result:
        """Run a task now, in the caller's coroutine (chat completions): cancelling the caller
        aborts the engines' work. Billing and usage are written after the reply, in the
        background (``drain`` waits for them at shutdown)."""
        await self.require_local_workers()
        run = self.prepare(protocol, remote_model, cap_usd)
        started = time.time()
        status = "failed"
        baseline = None
        try:
            result = await run.protocol.run(task, events=sink)
            status = "succeeded"
            baseline = baseline_of(result)
            return result
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            self.metrics.task_finished(protocol, status, time.time() - started)
            ending = Ending(status, {}, None, reserved_nano, baseline=baseline)
            self._spawn(self._close_inline(key_id, protocol, ending, run, started))

    async def _close_inline(
        self, key_id: str, protocol: str, ending: Ending, run: Run, started: float
    ) -> None:
        # Independent atomic scripts: no MULTI needed around them.
        async with self.store.redis.pipeline(transaction=False) as pipe:
            await self.store.api_keys.queue_settle(
                pipe, key_id, ending.release_nano, run.spent_nano
            )
            await self._queue_usage(pipe, key_id, protocol, ending, run, time.time(), started)
            await pipe.execute()
        self._note_overrun(None, protocol, run)

    def _spawn(self, coroutine: Any, *, cancel_at_shutdown: bool = False) -> None:
        job = asyncio.create_task(coroutine)
        self._background.add(job)
        if cancel_at_shutdown:
            self._cancel_at_shutdown.add(job)
        job.add_done_callback(self._background_done)

    def _background_done(self, job: asyncio.Task[None]) -> None:
        self._background.discard(job)
        self._cancel_at_shutdown.discard(job)
        if not job.cancelled() and job.exception() is not None:
            logger.error("a background job failed", exc_info=job.exception())

    async def drain(self) -> None:
        """Wait for the background billing of chat completions; cancel background scoring
        (mutual information), which records itself as cancelled."""
        for job in list(self._cancel_at_shutdown):
            job.cancel()
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _cap(record: TaskRecord) -> float | None:
    cap = record.request.get("cap_usd")
    return None if cap is None else float(cap)


def baseline_of(result: Result) -> dict[str, Any] | None:
    """The Result's counterfactual (``baseline``: remote-only's prompt tokens and USD), when the
    protocol computed one."""
    baseline = getattr(result, "baseline", None)
    if baseline is None:
        return None
    data = baseline.model_dump() if hasattr(baseline, "model_dump") else dict(baseline)
    return cast("dict[str, Any]", data)


def baseline_counters(baseline: dict[str, Any] | None) -> dict[str, int]:
    """What a baseline adds to the usage counters: the task, remote-only's prompt tokens and, when
    priced, its USD in nano-USD."""
    if baseline is None:
        return {}
    counters = {
        "baseline_tasks": 1,
        "baseline_prompt_tokens": int(baseline.get("remote_prompt_tokens") or 0),
    }
    usd = baseline.get("usd")
    if usd is not None:
        counters["baseline_nano"] = to_nano(float(usd))
    return counters
