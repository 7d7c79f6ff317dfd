"""Study records (one Redis hash each) and the FIFO queue the sidecar runner pops from."""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import redis.asyncio as aioredis

from workers import keys

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
        if self.started_at is not None:
            data["started_at"] = repr(self.started_at)
        if self.finished_at is not None:
            data["finished_at"] = repr(self.finished_at)
        if self.error is not None:
            data["error"] = self.error
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
        )


class StudyStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def enqueue(self, record: StudyRecord) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.study(record.id), mapping=record.to_hash())
            pipe.zadd(keys.STUDIES, {record.id: 0})
            pipe.rpush(keys.STUDY_QUEUE, record.id)
            await pipe.execute()

    async def queued(self) -> int:
        return int(await self.redis.llen(keys.STUDY_QUEUE))

    async def pop(self) -> str | None:
        value = await self.redis.lpop(keys.STUDY_QUEUE)
        return cast("str | None", value)

    async def get(self, study_id: str) -> StudyRecord | None:
        if not is_study_id(study_id):
            return None
        data = cast("dict[str, str]", await self.redis.hgetall(keys.study(study_id)))
        return StudyRecord.from_hash(data) if data else None

    async def update(self, study_id: str, **fields: Any) -> None:
        mapping: dict[Any, Any] = {
            name: json.dumps(value)
            if isinstance(value, dict)
            else repr(value)
            if isinstance(value, float)
            else str(value)
            for name, value in fields.items()
        }
        await self.redis.hset(keys.study(study_id), mapping=mapping)

    async def ids(self) -> list[str]:
        return cast("list[str]", await self.redis.zrange(keys.STUDIES, 0, -1))
