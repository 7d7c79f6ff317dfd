"""Task progress events: one Redis Stream per task. A late reader replays it from the start,
then follows new entries with ``XREAD BLOCK``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from service import keys

TERMINAL_EVENTS = frozenset({"final", "error", "cancelled"})


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    data: dict[str, Any]


class EventStore:
    def __init__(self, redis: aioredis.Redis, maxlen: int = 10_000) -> None:
        self.redis = redis
        self.maxlen = maxlen

    async def append(self, task_id: str, event_type: str, data: dict[str, Any]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            self.queue_append(pipe, task_id, event_type, data)
            await pipe.execute()

    def queue_append(self, pipe: Any, task_id: str, event_type: str, data: dict[str, Any]) -> None:
        entry = {"type": event_type, "data": json.dumps(data, default=str)}
        pipe.xadd(keys.task_events(task_id), entry, maxlen=self.maxlen, approximate=True)

    async def read(self, task_id: str, after: str = "0", count: int = 500) -> list[Event]:
        entries = cast(
            "list[tuple[str, dict[str, str]]]",
            await self.redis.xrange(keys.task_events(task_id), f"({after}", "+", count=count),
        )
        return [_event(entry_id, fields) for entry_id, fields in entries]

    async def follow(
        self, task_id: str, after: str = "0", block_ms: int = 2000
    ) -> AsyncIterator[Event | None]:
        """Every event after ``after``, then new ones as they come; yields ``None`` after each
        ``block_ms`` without news (the caller checks whether to go on). Ends after a terminal
        event."""
        last = after
        while True:
            backlog = await self.read(task_id, last)
            for event in backlog:
                last = event.id
                yield event
                if event.type in TERMINAL_EVENTS:
                    return
            if len(backlog) == 500:
                continue
            reply = cast(
                "list[tuple[str, list[tuple[str, dict[str, str]]]]]",
                await self.redis.xread({keys.task_events(task_id): last}, block=block_ms),
            )
            if not reply:
                yield None
                continue
            for _, entries in reply:
                for entry_id, fields in entries:
                    event = _event(entry_id, fields)
                    last = event.id
                    yield event
                    if event.type in TERMINAL_EVENTS:
                        return


def _event(entry_id: str, fields: dict[str, str]) -> Event:
    return Event(
        id=str(entry_id),
        type=fields.get("type", "message"),
        data=json.loads(fields.get("data") or "{}"),
    )
