"""Task records (one Redis hash each), their status transitions (atomic, in Lua), the task stream
runners read through a consumer group (``service.runner``), listing with cursors, and idempotency
keys."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from service import keys
from service.store.documents import StoredDocument
from service.store.multiplexed import MultiplexedConnection, register_script
from workers import keys as worker_keys

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

# Set the fields ARGV[2..] (name, value pairs) when the status is one of ARGV[1] (comma list).
# Returns 1 on success, else the current status ('' for a missing task).
logger = logging.getLogger(__name__)

_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return '' end
for allowed in string.gmatch(ARGV[1], '[^,]+') do
  if allowed == current then
    if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
    return 1
  end
end
return current
"""

# Admit and create a task in one command, so a submit costs one round trip and the checks hold
# under concurrency. KEYS: the task hash, all tasks, the key's tasks, the task stream, the API key
# hash, the protocol's tasks, then one key per new document. ARGV: task id, "1" to enqueue, the
# most tasks that may wait ("-1": no limit), the runners' group, nano-USD to reserve on the key,
# the document payloads (one per document key), then the hash's fields as one JSON object (one
# argument, not one per field: the client packs every argument in Python). Documents are written
# only if absent.
# Returns {'queue_full', waiting}, {'budget', available} or {'created', available} (-1: no budget).
_CREATE = """
local limit = tonumber(ARGV[3])
if limit >= 0 then
  local waiting = redis.call('XLEN', KEYS[4])
  local pending = redis.pcall('XPENDING', KEYS[4], ARGV[4])
  if type(pending) == 'table' and pending.err == nil then waiting = waiting - pending[1] end
  if waiting >= limit then return {'queue_full', waiting} end
end
local amount = tonumber(ARGV[5])
local available = -1
if amount > 0 then
  if redis.call('EXISTS', KEYS[5]) == 0 then return {'budget', 0} end
  local budget = redis.call('HGET', KEYS[5], 'budget_nano')
  if budget and budget ~= '' then
    local spent = tonumber(redis.call('HGET', KEYS[5], 'spent_nano') or '0')
    local reserved = tonumber(redis.call('HGET', KEYS[5], 'reserved_nano') or '0')
    available = tonumber(budget) - spent - reserved
    if amount > available then return {'budget', available} end
    available = available - amount
  end
  redis.call('HINCRBY', KEYS[5], 'reserved_nano', amount)
end
local documents = #KEYS - 6
for i = 1, documents do redis.call('SET', KEYS[6 + i], ARGV[5 + i], 'NX') end
local fields = {}
for name, value in pairs(cjson.decode(ARGV[6 + documents])) do
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('ZADD', KEYS[6], 0, ARGV[1])
if ARGV[2] == '1' then redis.call('XADD', KEYS[4], '*', 'task', ARGV[1]) end
return {'created', available}
"""


def new_task_id() -> str:
    # Creation time first (ms, hex), so the lexical order of ids is their time order.
    return f"task_{int(time.time() * 1000):011x}{secrets.token_hex(5)}"


@dataclass(frozen=True, slots=True)
class Admission:
    """What ``TaskStore.create`` decided: created, or refused for a full queue or the budget."""

    outcome: Literal["created", "queue_full", "budget"]
    waiting: int = 0  # tasks waiting, when the queue was full
    available_nano: int | None = None  # budget left (after the reservation when created)


@dataclass
class TaskRecord:
    id: str
    key_id: str
    protocol: str
    status: str
    created_at: float
    request: dict[str, Any]
    source: str = "tasks"
    reserved_nano: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    partial_usage: dict[str, Any] | None = None
    mi: dict[str, Any] | None = None  # service.mi_background: I(X; Z) of what crossed
    attempts: int = 0
    cancel_requested: bool = False
    billed_nano: int = 0  # remote spend over all attempts (HINCRBY with each settlement)
    run_token: str | None = None  # the fencing token of the run that owns the task
    budget_overrun: bool = False
    reply_models: list[str] | None = None  # models the remote's replies named instead

    def to_hash(self) -> dict[Any, Any]:
        data = {
            "id": self.id,
            "key_id": self.key_id,
            "protocol": self.protocol,
            "status": self.status,
            "created_at": repr(self.created_at),
            "request": json.dumps(self.request),
            "source": self.source,
            "reserved_nano": str(self.reserved_nano),
            "attempts": str(self.attempts),
        }
        return data

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> TaskRecord:
        def loads(name: str) -> Any:
            value = data.get(name)
            return json.loads(value) if value else None

        def number(name: str) -> float | None:
            value = data.get(name)
            return float(value) if value else None

        return cls(
            id=data["id"],
            key_id=data["key_id"],
            protocol=data["protocol"],
            status=data["status"],
            created_at=float(data["created_at"]),
            request=loads("request") or {},
            source=data.get("source", "tasks"),
            reserved_nano=int(data.get("reserved_nano", "0")),
            started_at=number("started_at"),
            finished_at=number("finished_at"),
            result=loads("result"),
            error=loads("error"),
            accuracy=loads("accuracy"),
            partial_usage=loads("partial_usage"),
            mi=loads("mi"),
            attempts=int(data.get("attempts", "0")),
            cancel_requested=data.get("cancel_requested") == "1",
            billed_nano=int(data.get("billed_nano") or "0"),
            run_token=data.get("run_token") or None,
            budget_overrun=data.get("budget_overrun") == "1",
            reply_models=loads("reply_models"),
        )


def encode_fields(fields: dict[str, Any]) -> list[str]:
    """Field/value pairs for the transition script: dicts and lists as JSON, numbers as text."""
    flat: list[str] = []
    for name, value in fields.items():
        if isinstance(value, dict | list):
            text = json.dumps(value)
        elif isinstance(value, float):
            text = repr(value)
        else:
            text = "" if value is None else str(value)
        flat += [name, text]
    return flat


def _mapping(fields: dict[str, Any]) -> dict[Any, Any]:
    flat = encode_fields(fields)
    return dict(zip(flat[::2], flat[1::2], strict=True))


@dataclass(frozen=True, slots=True)
class ReplicaWait:
    """``WAIT replicas timeout_ms`` after each admission: the submit is answered once that many
    replicas have it (or the timeout passed; the task is admitted either way, on the primary)."""

    replicas: int = 0
    timeout_ms: int = 1000


NO_REPLICA_WAIT = ReplicaWait()


class TaskStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        multiplexed: MultiplexedConnection | None = None,
        *,
        replica_wait: ReplicaWait = NO_REPLICA_WAIT,
    ) -> None:
        self.redis = redis
        self._transition = redis.register_script(_TRANSITION)
        # The one command of a submit: on the multiplexed connection, off redis-py's pool.
        self._create = register_script(redis, multiplexed, _CREATE)
        self._create_script = redis.register_script(_CREATE)
        self._multiplexed = multiplexed
        self._replica_wait = replica_wait

    async def create(
        self,
        record: TaskRecord,
        *,
        enqueue: bool,
        documents: Sequence[StoredDocument] = (),
        max_waiting: int | None = None,
    ) -> Admission:
        """Admit and store the task (and its new documents) and queue it, atomically: refused
        when ``max_waiting`` tasks already wait, or when reserving ``record.reserved_nano`` on its
        key would pass the key's budget (nothing is written then)."""
        names = [keys.task(record.id), keys.TASKS, keys.tasks_of(record.key_id), keys.TASK_STREAM]
        names += [keys.api_key(record.key_id), keys.tasks_of_protocol(record.protocol)]
        names += [keys.document(document.id) for document in documents]
        args: list[str] = [
            record.id,
            "1" if enqueue else "0",
            str(-1 if max_waiting is None else max_waiting),
            keys.RUNNER_GROUP,
            str(record.reserved_nano),
        ]
        args += [document.payload() for document in documents]
        args.append(json.dumps(record.to_hash()))
        if self._replica_wait.replicas:
            outcome, number = await self._create_replicated(names, args)
        else:
            outcome, number = await self._create(keys=names, args=args)
        if outcome == "queue_full":
            return Admission("queue_full", waiting=int(number))
        available = None if int(number) < 0 else int(number)
        if outcome == "budget":
            return Admission("budget", available_nano=available)
        return Admission("created", available_nano=available)

    async def _create_replicated(self, names: list[str], args: list[str]) -> tuple[str, Any]:
        """The admission script, then WAIT on the same connection (WAIT counts the replicas that
        have this connection's writes)."""
        wait = self._replica_wait
        if self._multiplexed is not None:
            outcome, number = await self._create(keys=names, args=args)
            acked = await self._multiplexed.execute("WAIT", wait.replicas, wait.timeout_ms)
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._create_script(keys=names, args=args, client=pipe)
                pipe.execute_command("WAIT", wait.replicas, wait.timeout_ms)
                (outcome, number), acked = await pipe.execute()
        if outcome == "created" and int(acked) < wait.replicas:
            logger.warning(
                "task %s admitted on the primary, but %d of %d replica(s) had it within %d ms",
                args[0],
                int(acked),
                wait.replicas,
                wait.timeout_ms,
            )
        return str(outcome), number

    async def get(self, task_id: str) -> TaskRecord | None:
        data = cast("dict[str, str]", await self.redis.hgetall(keys.task(task_id)))
        return TaskRecord.from_hash(data) if data else None

    async def transition(
        self, task_id: str, allowed: tuple[str, ...], fields: dict[str, Any]
    ) -> bool | str:
        """Set ``fields`` when the status is one of ``allowed``; True, or the current status."""
        result = await self._transition(
            keys=[keys.task(task_id)], args=[",".join(allowed), *encode_fields(fields)]
        )
        return True if result == 1 else str(result)

    async def update(self, task_id: str, fields: dict[str, Any]) -> None:
        await self.redis.hset(keys.task(task_id), mapping=_mapping(fields))

    @staticmethod
    def queue_update(pipe: Any, task_id: str, fields: dict[str, Any]) -> None:
        pipe.hset(keys.task(task_id), mapping=_mapping(fields))

    async def fenced_write(
        self, task_id: str, token: str | None, write: Callable[[Any], Awaitable[None]]
    ) -> bool:
        """Run ``write`` (queueing commands on a transaction) only while the task holds
        ``token``: the check and the writes are one MULTI under WATCH, so a runner that took the
        task over in between makes it fail. False: refused (another run owns the task). With no
        token (a task failed without running), the writes are made unconditionally."""
        name = keys.task(task_id)
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    if token is not None:
                        await pipe.watch(name)
                        if await pipe.hget(name, "run_token") != token:
                            return False
                        pipe.multi()  # type: ignore[no-untyped-call]
                    await write(pipe)
                    await pipe.execute()
                    return True
                except WatchError:
                    continue  # the task hash changed (e.g. a cancel flag): check again

    @staticmethod
    def queue_expire(pipe: Any, task_id: str, ttl_s: int) -> None:
        """A task that ended is kept ``ttl_s`` more: its record and its event stream."""
        pipe.expire(keys.task(task_id), ttl_s)
        pipe.expire(keys.task_events(task_id), ttl_s)

    async def purge(self, record: TaskRecord) -> None:
        """Delete a finished task now: record, events, checkpoints, its place in the lists."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.task(record.id), keys.task_events(record.id))
            self.queue_forget_checkpoints(pipe, record.id)
            pipe.zrem(keys.TASKS, record.id)
            pipe.zrem(keys.tasks_of(record.key_id), record.id)
            await pipe.execute()

    @staticmethod
    def queue_add_billed(pipe: Any, task_id: str, spent_nano: int) -> None:
        """Add one attempt's remote spend to the task's total over all its attempts."""
        pipe.hincrby(keys.task(task_id), "billed_nano", spent_nano)

    @staticmethod
    def queue_done(pipe: Any, entry_id: str) -> None:
        """The runner is finished with the stream entry: acknowledge and delete it."""
        pipe.xack(keys.TASK_STREAM, keys.RUNNER_GROUP, entry_id)
        pipe.xdel(keys.TASK_STREAM, entry_id)

    @classmethod
    def queue_requeue(cls, pipe: Any, task_id: str, entry_id: str) -> None:
        """Back into the queue as a new entry (a clean shutdown interrupted it)."""
        cls.queue_done(pipe, entry_id)
        pipe.xadd(keys.TASK_STREAM, {"task": task_id})

    @staticmethod
    def queue_forget_checkpoints(pipe: Any, task_id: str) -> None:
        """A task that ended needs no recorded remote replies or local job results any more."""
        pipe.delete(keys.task_remote_calls(task_id), worker_keys.job_results(task_id))

    async def request_cancel(self, task_id: str) -> None:
        await self.redis.hset(keys.task(task_id), "cancel_requested", "1")

    async def cancel_requested(self, task_id: str) -> bool:
        return (await self.redis.hget(keys.task(task_id), "cancel_requested")) == "1"

    async def page(
        self, key_id: str | None, cursor: str | None, count: int, *, index: str | None = None
    ) -> list[TaskRecord]:
        """Up to ``count`` records, newest first, after ``cursor`` (a task id): every task, a
        key's tasks, or those of ``index`` (one of ``index_for``'s)."""
        if index is None:
            index = keys.TASKS if key_id is None else keys.tasks_of(key_id)
        upper = f"({cursor}" if cursor else "+"
        ids = cast(
            "list[str]", await self.redis.zrevrangebylex(index, upper, "-", start=0, num=count)
        )
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hgetall(keys.task(task_id))
            rows = await pipe.execute()
        gone = [task_id for task_id, row in zip(ids, rows, strict=True) if not row]
        if gone:  # expired (MGW_TASK_TTL_S) or purged: the index forgets them as it is read
            await self.redis.zrem(index, *gone)
        return [TaskRecord.from_hash(row) for row in rows if row]

    @staticmethod
    def queue_index_settled(pipe: Any, task_id: str, protocol: str, status: str) -> None:
        """A task ended with ``status``: into the status indexes the admin listing filters by."""
        pipe.zadd(keys.tasks_with_status(status), {task_id: 0})
        pipe.zadd(keys.tasks_of_protocol_status(protocol, status), {task_id: 0})

    @staticmethod
    def index_for(protocol: str | None, status: str | None) -> tuple[str, bool]:
        """The narrowest index for the filters, and whether it holds only matching tasks
        (ended statuses are indexed when a task settles; queued and running ones are not)."""
        ended = status in TERMINAL
        if protocol and ended:
            return keys.tasks_of_protocol_status(protocol, str(status)), True
        if ended:
            return keys.tasks_with_status(str(status)), True
        if protocol:
            return keys.tasks_of_protocol(protocol), status is None
        return keys.TASKS, status is None

    # -- the queue ------------------------------------------------------------------------
    async def done(self, entry_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            self.queue_done(pipe, entry_id)
            await pipe.execute()

    async def queue_depth(self) -> int:
        """Tasks waiting in the stream: its entries less those a runner holds."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.TASK_STREAM)
            pipe.xpending(keys.TASK_STREAM, keys.RUNNER_GROUP)
            length, pending = await pipe.execute(raise_on_error=False)
        held = int(pending["pending"]) if isinstance(pending, dict) else 0
        return max(0, int(length) - held) if isinstance(length, int) else 0

    # -- idempotency ----------------------------------------------------------------------
    async def claim_idempotency(
        self, key_id: str, digest: str, value: str, ttl_s: int
    ) -> str | None:
        """Claim the key for ``value`` (``task_id|fingerprint``); the existing value if taken."""
        name = keys.idempotency(key_id, digest)
        if await self.redis.set(name, value, nx=True, ex=ttl_s):
            return None
        existing = await self.redis.get(name)
        return str(existing) if existing is not None else None

    async def release_idempotency(self, key_id: str, digest: str) -> None:
        await self.redis.delete(keys.idempotency(key_id, digest))
