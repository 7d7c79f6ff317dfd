"""Writes a task's progress events to its Redis Stream without making the protocol wait: events
are queued and flushed in order, many per round trip, by one background flusher."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from service.store import Store

logger = logging.getLogger(__name__)


class EventWriter:
    def __init__(self, store: Store, task_id: str) -> None:
        self.store = store
        self.task_id = task_id
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def emit(self, event_type: str, data: dict[str, Any]) -> None:
        """The protocols' event sink: queue the event; a flush is started if none is running."""
        self._pending.append((event_type, data))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self.store.redis.pipeline(transaction=False) as pipe:
                    for event_type, data in batch:
                        self.store.events.queue_append(pipe, self.task_id, event_type, data)
                    await pipe.execute()
            except Exception:  # a lost progress event must not fail the task
                logger.warning("could not write %d events of %s", len(batch), self.task_id)

    async def close(self) -> None:
        """Wait until every queued event is written (also when the task was cancelled)."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._pending:
            await self._flush()
