"""The task service behind ``/v1/tasks``: submit (limits, documents, idempotency, budget
reservation), read, list and cancel. Routes only validate and call it."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

from engines.prices import PriceTable
from protocols import protocol_class
from protocols.task import Options, Task
from service import keys
from service.abandon import Abandoned
from service.budget import admission_baseline, reservation_usd, worst_case_usd
from service.documents import DocumentService
from service.errors import BudgetExceeded, Conflict, NotFound, QueueFull
from service.mi_background import expired
from service.pool import EnginePool, RemoteChoice
from service.privacy import with_privacy
from service.runner import TaskRunner
from service.schemas import TaskCreate, TaskList, TaskView
from service.settings import Settings
from service.store import TERMINAL, ApiKey, Store, TaskRecord, new_task_id
from service.store.api_keys import NANO, to_nano
from service.store.events import Event as TaskEvent
from service.store.summary import Settled


class BudgetService:
    """Reserve a task's worst-case remote cost against its key's budget, before it runs."""

    def __init__(self, store: Store, pool: EnginePool, prices: PriceTable, settings: Settings):
        self.store = store
        self.pool = pool
        self.prices = prices
        self.settings = settings

    def plan(
        self,
        key: ApiKey,
        protocol: str,
        options: Options,
        remote: RemoteChoice,
        max_cost_usd: float | None,
        baseline_tokens: int | None = None,
    ) -> tuple[int, float | None]:
        """(nano-USD to reserve, the task's cost cap). Raises ``BudgetExceeded`` (402) when the
        key has a budget and the remote model has no price to hold it to. ``baseline_tokens``
        (``admission_baseline``) bounds minion/minions to their share of it."""
        unpriced = not remote.stand_in and not self.prices.has_price(remote.engine.model)
        uses_remote = protocol_class(protocol).max_remote_calls(options) > 0
        if unpriced and uses_remote and key.budget_nano is not None:
            raise BudgetExceeded(
                f"remote model {remote.engine.model!r} has no price, so a budget cannot be "
                "enforced on it; ask the operator to add it to the price table",
                param="options.remote_model",
            )
        worst = worst_case_usd(
            protocol,
            options,
            remote.engine,
            self.prices,
            stand_in=remote.stand_in,
            baseline_tokens=baseline_tokens,
        )
        amount_usd, cap = reservation_usd(worst, max_cost_usd, self.settings.task_max_cost_usd)
        return to_nano(amount_usd), cap

    async def baseline(
        self, task: Task, protocol: str, options: Options, remote: RemoteChoice
    ) -> int | None:
        """The task's baseline for its reservation (``admission_baseline``)."""
        return await admission_baseline(
            task, protocol, options, remote.engine, self.prices, stand_in=remote.stand_in
        )

    @staticmethod
    def refused(key: ApiKey, amount_nano: int, available_nano: int | None) -> BudgetExceeded:
        left = (available_nano or 0) / NANO
        return BudgetExceeded(
            f"budget exceeded: this task may cost up to ${amount_nano / NANO:.6f} and the key "
            f"has ${max(left, 0):.6f} of its ${(key.budget_usd or 0):.6f} budget left (spent or "
            "reserved by running tasks); lower options.max_cost_usd or raise the budget"
        )

    async def reserve(
        self,
        key: ApiKey,
        protocol: str,
        options: Options,
        remote: RemoteChoice,
        max_cost_usd: float | None,
        baseline_tokens: int | None = None,
    ) -> tuple[int, float | None]:
        """``plan``, then reserve the amount on the key now (a task that runs at once)."""
        amount, cap = self.plan(key, protocol, options, remote, max_cost_usd, baseline_tokens)
        reservation = await self.store.api_keys.reserve(key.id, amount)
        if not reservation.granted:
            raise self.refused(key, amount, reservation.available_nano)
        return amount, cap


class TaskService:
    def __init__(
        self,
        store: Store,
        pool: EnginePool,
        documents: DocumentService,
        budgets: BudgetService,
        runner: TaskRunner,
        settings: Settings,
    ) -> None:
        self.store = store
        self.pool = pool
        self.documents = documents
        self.budgets = budgets
        self.runner = runner
        self.settings = settings

    async def submit(
        self,
        key: ApiKey,
        body: TaskCreate,
        idempotency_key: str | None,
        *,
        abandoned: Abandoned | None = None,
    ) -> tuple[TaskRecord, bool]:
        """(the task, whether it was created now). The same Idempotency-Key and body return
        the task that key created first. ``abandoned`` (the client left) stops the parsing of
        inline PDFs early."""
        task_id = new_task_id()
        claim: tuple[str, str] | None = None
        if idempotency_key is not None:
            digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
            fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()[:32]
            existing = await self.store.tasks.claim_idempotency(
                key.id, digest, f"{task_id}|{fingerprint}", self.settings.task_ttl_s
            )
            if existing is not None:
                return await self._replay(key, existing, fingerprint), False
            claim = (key.id, digest)
        try:
            record = await self._create(key, body, task_id, abandoned)
        except BaseException:
            if claim is not None:
                await self.store.tasks.release_idempotency(*claim)
            raise
        return record, True

    async def _replay(self, key: ApiKey, existing: str, fingerprint: str) -> TaskRecord:
        task_id, _, first_fingerprint = existing.partition("|")
        if first_fingerprint != fingerprint:
            raise Conflict(
                "Idempotency-Key was already used with a different request body",
                param="Idempotency-Key",
            )
        for _ in range(50):  # the first request may still be creating it
            record = await self.store.tasks.get(task_id)
            if record is not None:
                return record
            await asyncio.sleep(0.02)
        raise Conflict("a request with this Idempotency-Key is still in progress; retry")

    async def _create(
        self, key: ApiKey, body: TaskCreate, task_id: str, abandoned: Abandoned | None = None
    ) -> TaskRecord:
        options = body.options
        protocol_options = with_privacy(options.protocol_options(), key, self.settings)
        remote = self.pool.remote(options.remote_model)
        stored, inline = await self.documents.resolve(key, body.documents, abandoned)
        # ``options`` is an ``Options``: unset fields hold the same defaults the run will use.
        task = Task(
            question=body.question,
            documents=tuple(doc.document for doc in stored),
            metadata=body.metadata,
        )
        baseline = await self.budgets.baseline(task, body.protocol, options, remote)
        amount, cap = self.budgets.plan(
            key, body.protocol, options, remote, options.max_cost_usd, baseline
        )
        record = TaskRecord(
            id=task_id,
            key_id=key.id,
            protocol=body.protocol,
            status="queued",
            created_at=time.time(),
            reserved_nano=amount,
            request={
                "question": body.question,
                "document_ids": [doc.id for doc in stored],
                "metadata": body.metadata,
                "options": protocol_options,
                "remote_model": options.remote_model,
                "cap_usd": cap,
                "reference_answer": body.reference_answer,
            },
        )
        # Backpressure, the budget reservation and the write are one atomic script.
        admission = await self.store.tasks.create(
            record, enqueue=True, documents=inline, max_waiting=self.settings.max_queued_tasks
        )
        if admission.outcome == "queue_full":
            raise QueueFull(
                f"the task queue is full ({admission.waiting} tasks waiting, at most "
                f"{self.settings.max_queued_tasks}); retry later",
                retry_after_s=self.settings.queue_full_retry_after_s,
            )
        if admission.outcome == "budget":
            raise self.budgets.refused(key, amount, admission.available_nano)
        # Used now: each document expires MGW_DOCUMENT_TTL_S after its last use.
        await self.store.documents.touch([doc.id for doc in stored], self.settings.document_ttl_s)
        await self.store.documents.count_bytes(key.id, inline)
        return record

    async def get(self, key: ApiKey, task_id: str) -> TaskRecord:
        record = await self.store.tasks.get(task_id) if len(task_id) <= 64 else None
        if record is None or (record.key_id != key.id and not key.admin):
            raise NotFound(f"no task {task_id!r}", param="task_id")
        return record

    async def events(self, key: ApiKey, task_id: str, after: str) -> AsyncIterator[TaskEvent]:
        """The task's events after ``after`` (a stream id; "0": all), then live ones, until the
        task ends. NotFound (raised at once) for a task the key may not see."""
        await self.get(key, task_id)
        return self._follow(task_id, after)

    async def _follow(self, task_id: str, after: str) -> AsyncIterator[TaskEvent]:
        async for event in self.store.events.follow(task_id, after):
            if event is None:  # a quiet while: stop once the task has ended
                record = await self.store.tasks.get(task_id)
                if record is None or record.status in TERMINAL:
                    return
                continue
            yield event

    async def find(
        self,
        key: ApiKey,
        *,
        status: str | None,
        protocol: str | None,
        limit: int,
        cursor: str | None,
        key_id: str | None = None,
    ) -> tuple[list[TaskRecord], str | None]:
        """Up to ``limit`` tasks, newest first, after ``cursor``, and the cursor of the next page
        (None on the last). A key sees its own tasks; an admin key every task, or ``key_id``'s.
        Tasks that ended are found through their status and protocol indexes; the rest by a
        bounded scan of the narrowest index, which the cursor carries on from."""
        owner = key.id if not key.admin else key_id
        if owner is None:
            index, _ = self.store.tasks.index_for(protocol, status)
        else:
            index = keys.tasks_of(owner)
        found: list[TaskRecord] = []
        batch = max(limit * 2, 50)
        has_more = False
        for _ in range(20):  # a bounded scan per page; the cursor carries on from there
            page = await self.store.tasks.page(owner, cursor, batch, index=index)
            for record in page:
                cursor = record.id
                if (status is None or record.status == status) and (
                    protocol is None or record.protocol == protocol
                ):
                    found.append(record)
                    if len(found) == limit:
                        break
            if len(found) == limit:
                has_more = bool(await self.store.tasks.page(owner, cursor, 1, index=index))
                break
            if len(page) < batch:
                cursor = None
                break
        else:
            has_more = True
        return found, cursor if has_more else None

    async def list(
        self,
        key: ApiKey,
        *,
        status: str | None,
        protocol: str | None,
        limit: int,
        cursor: str | None,
    ) -> TaskList:
        found, next_cursor = await self.find(
            key, status=status, protocol=protocol, limit=limit, cursor=cursor
        )
        return TaskList(
            data=[view(record) for record in found],
            next_cursor=next_cursor,
            has_more=next_cursor is not None,
        )

    async def purge(self, key: ApiKey, task_id: str) -> TaskRecord:
        """Delete a finished task (record, events) now; the view it had is returned."""
        record = await self.get(key, task_id)
        if record.status not in TERMINAL:
            raise Conflict(
                f"task {task_id} is {record.status}; cancel it (DELETE without purge) and purge "
                "it once it has ended",
                param="purge",
            )
        await self.store.tasks.purge(record)
        return record

    async def cancel(self, key: ApiKey, task_id: str) -> TaskRecord:
        record = await self.get(key, task_id)
        if record.status in TERMINAL:
            raise Conflict(f"task {task_id} already {record.status}; it cannot be cancelled")
        await self.store.tasks.request_cancel(task_id)
        finished = time.time()
        moved = await self.store.tasks.transition(
            task_id, ("queued",), {"status": "cancelled", "finished_at": finished}
        )
        if moved is True:
            async with self.store.redis.pipeline(transaction=True) as pipe:
                await self.store.api_keys.queue_settle(pipe, record.key_id, record.reserved_nano, 0)
                self.store.events.queue_append(pipe, task_id, "cancelled", {"task_id": task_id})
                await self.store.usage.queue_add(
                    pipe,
                    key_id=record.key_id,
                    protocol=record.protocol,
                    finished_at=finished,
                    counters={"tasks": 1, "cancelled": 1},
                )
                settled = Settled(
                    protocol=record.protocol,
                    status="cancelled",
                    finished_at=finished,
                    latency_s=finished - record.created_at,
                )
                await self.store.summary.queue_settled(pipe, settled)
                self.store.tasks.queue_index_settled(pipe, task_id, record.protocol, "cancelled")
                self.store.tasks.queue_expire(pipe, task_id, self.settings.task_ttl_s)
                await pipe.execute()
        else:
            await self.runner.cancel(task_id)
        return await self.get(key, task_id)


def view(record: TaskRecord) -> TaskView:
    data: dict[str, Any] = {
        "id": record.id,
        "status": record.status,
        "protocol": record.protocol,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "metadata": record.request.get("metadata", {}),
        "result": record.result,
        "error": record.error,
        "partial_usage": record.partial_usage,
        "accuracy": record.accuracy,
        "mi": expired(record.mi, time.time()),
        "billing": {
            "billed_usd": record.billed_nano / NANO,
            "reserved_usd": 0.0 if record.status in TERMINAL else record.reserved_nano / NANO,
            "budget_overrun": record.budget_overrun,
            "reply_models": record.reply_models or [],
        },
        "warnings": [OVERRUN_WARNING] if record.budget_overrun else [],
    }
    return TaskView.model_validate(data)


OVERRUN_WARNING = (
    "budget_overrun: the remote reported usage costing more than the task's reservation; it was "
    "billed as reported, so the key may be over its budget (its next tasks are refused with 402)"
)
