"""Study records (one Redis hash each), their results and figures, and the study stream.

A record is written with its stream entry in one transaction; a study's end (succeeded, failed,
or queued again after an interrupted run) is written with the ``XACK`` + ``XDEL`` of its entry
in one transaction, so the stream only ever holds waiting and running studies.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from workers import keys
from workers.streams import ensure_group

StudyStatus = Literal["queued", "running", "succeeded", "failed"]
STUDY_ID = re.compile(r"^study_[0-9a-f]{11}[0-9a-f]{10}$")


def new_study_id() -> str:
    # Creation time first (ms, hex), so the lexical order of ids is their time order.
    return f"study_{int(time.time() * 1000):011x}{secrets.token_hex(5)}"


def is_study_id(value: str) -> bool:
    return STUDY_ID.fullmatch(value) is not None


@dataclass
class StudyRecord:
    id: str
    name: str
    key_id: str
    params: dict[str, Any]
    status: str = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    worker: str | None = None  # the consumer running (or that ran) it
    result: dict[str, Any] | None = None  # the StudyResult as JSON, once succeeded

    def to_hash(self) -> dict[Any, Any]:
        data: dict[Any, Any] = {
            "id": self.id,
            "name": self.name,
            "key_id": self.key_id,
            "params": json.dumps(self.params),
            "status": self.status,
            "created_at": repr(self.created_at),
            "progress": json.dumps(self.progress),
        }
        for name in ("started_at", "finished_at"):
            if (value := getattr(self, name)) is not None:
                data[name] = repr(value)
        for name in ("error", "worker"):
            if (value := getattr(self, name)) is not None:
                data[name] = value
        if self.result is not None:
            data["result"] = json.dumps(self.result)
        return data

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> StudyRecord:
        def number(name: str) -> float | None:
            return float(data[name]) if name in data else None

        return cls(
            id=data["id"],
            name=data["name"],
            key_id=data["key_id"],
            params=json.loads(data["params"]),
            status=data["status"],
            created_at=float(data["created_at"]),
            started_at=number("started_at"),
            finished_at=number("finished_at"),
            progress=json.loads(data.get("progress", "{}")),
            error=data.get("error"),
            worker=data.get("worker"),
            result=json.loads(data["result"]) if "result" in data else None,
        )


def _encode(fields: Mapping[str, Any]) -> dict[Any, Any]:
    return {
        name: json.dumps(value)
        if isinstance(value, dict)
        else repr(value)
        if isinstance(value, float)
        else str(value)
        for name, value in fields.items()
    }


class StudyStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    # -- records ------------------------------------------------------------------------------
    async def enqueue(self, record: StudyRecord) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.study(record.id), mapping=record.to_hash())
            pipe.zadd(keys.STUDIES, {record.id: 0})
            pipe.xadd(keys.STUDY_STREAM, {"study": record.id})
            await pipe.execute()

    async def get(self, study_id: str) -> StudyRecord | None:
        if not is_study_id(study_id):
            return None
        data = cast("dict[str, str]", await self.redis.hgetall(keys.study(study_id)))
        return StudyRecord.from_hash(data) if data else None

    async def update(self, study_id: str, **fields: Any) -> None:
        await self.redis.hset(keys.study(study_id), mapping=_encode(fields))

    async def ids(self) -> list[str]:
        return cast("list[str]", await self.redis.zrange(keys.STUDIES, 0, -1))

    async def recent(self, limit: int) -> list[StudyRecord]:
        """The newest ``limit`` studies, newest first."""
        ids = cast("list[str]", await self.redis.zrevrange(keys.STUDIES, 0, limit - 1))
        async with self.redis.pipeline(transaction=False) as pipe:
            for study_id in ids:
                pipe.hgetall(keys.study(study_id))
            rows = await pipe.execute()
        return [StudyRecord.from_hash(row) for row in rows if row]

    async def consumers(self) -> list[dict[str, Any]]:
        """The study queue's consumers: name, studies held, seconds since each last read."""
        try:
            infos = await self.redis.xinfo_consumers(keys.STUDY_STREAM, keys.STUDY_GROUP)
        except ResponseError:  # no group yet: no consumer ever started
            return []
        return [
            {"name": info["name"], "pending": int(info["pending"]), "idle_s": info["idle"] / 1000}
            for info in infos
        ]

    async def figure(self, study_id: str, name: str) -> bytes | None:
        if not is_study_id(study_id):
            return None
        value: Any = await self.redis.hget(keys.study_figures(study_id), name)
        return base64.b64decode(value) if value is not None else None

    # -- the queue ----------------------------------------------------------------------------
    async def ensure_group(self) -> None:
        await ensure_group(self.redis, keys.STUDY_STREAM, keys.STUDY_GROUP)

    async def queued(self) -> int:
        """Studies waiting: the stream's length less the entries a consumer holds."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.STUDY_STREAM)
            pipe.xpending(keys.STUDY_STREAM, keys.STUDY_GROUP)
            try:
                length, pending = await pipe.execute()
            except ResponseError:  # NOGROUP: nobody has read the stream yet
                return int(await self.redis.xlen(keys.STUDY_STREAM))
        return max(0, int(length) - int(pending["pending"]))

    async def succeed(
        self,
        study_id: str,
        entry_id: str,
        result: dict[str, Any],
        figures: Mapping[str, bytes],
        progress: dict[str, Any],
    ) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.study_figures(study_id))
            if figures:
                encoded: dict[Any, Any] = {
                    n: base64.b64encode(b).decode("ascii") for n, b in figures.items()
                }
                pipe.hset(keys.study_figures(study_id), mapping=encoded)
            pipe.hset(
                keys.study(study_id),
                mapping=_encode(
                    {
                        "status": "succeeded",
                        "finished_at": time.time(),
                        "progress": progress,
                        "result": result,
                    }
                ),
            )
            self._done(pipe, entry_id)
            await pipe.execute()

    async def fail(self, study_id: str, entry_id: str, error: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            fields = {"status": "failed", "finished_at": time.time(), "error": error[:2000]}
            pipe.hset(keys.study(study_id), mapping=_encode(fields))
            self._done(pipe, entry_id)
            await pipe.execute()

    async def requeue(self, study_id: str, entry_id: str) -> None:
        """Put an interrupted study back in the queue as a new entry (its run starts over)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.study(study_id), mapping={"status": "queued", "progress": "{}"})
            pipe.hdel(keys.study(study_id), "started_at", "worker")
            pipe.xadd(keys.STUDY_STREAM, {"study": study_id})
            self._done(pipe, entry_id)
            await pipe.execute()

    async def drop(self, entry_id: str) -> None:
        """Remove an entry whose study is gone or already ended."""
        async with self.redis.pipeline(transaction=True) as pipe:
            self._done(pipe, entry_id)
            await pipe.execute()

    @staticmethod
    def _done(pipe: Any, entry_id: str) -> None:
        pipe.xack(keys.STUDY_STREAM, keys.STUDY_GROUP, entry_id)
        pipe.xdel(keys.STUDY_STREAM, entry_id)
