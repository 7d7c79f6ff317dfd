"""The single door every model call of a protocol goes through, so none escapes the bill.

A protocol never calls ``engine.generate`` itself: it calls ``Recorder.generate``, which times the
call, records each result's usage (one record per remote request, one per local batch), prices the
remote side, and emits the ``remote_call`` event. Totals in the Result are sums of these records,
so "sum of per-call usage equals the reported total" holds by construction and is tested.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from engines.base import Engine, GenerationRequest, GenerationResult
from engines.prices import PriceTable
from engines.usage import Usage
from protocols.result import CallRecord, TokenCounts

logger = logging.getLogger(__name__)

Side = Literal["local", "remote"]
EventSink = Callable[[str, dict[str, Any]], Awaitable[None]]


class Events:
    """Optional progress events for the gateway to stream. A failing sink is logged, not fatal:
    losing a progress message must not lose the answer."""

    def __init__(self, sink: EventSink | None) -> None:
        self._sink = sink

    async def emit(self, event_type: str, data: dict[str, Any]) -> None:
        if self._sink is None:
            return
        try:
            await self._sink(event_type, data)
        except Exception:
            logger.exception("event sink failed on %s; continuing without it", event_type)


class Recorder:
    def __init__(self, local: Engine, remote: Engine, prices: PriceTable, events: Events) -> None:
        self.engines: dict[Side, Engine] = {"local": local, "remote": remote}
        self.prices = prices
        self.events = events
        self.calls: list[CallRecord] = []

    async def generate(
        self, side: Side, purpose: str, requests: Sequence[GenerationRequest], *, round: int
    ) -> list[GenerationResult]:
        engine = self.engines[side]
        started = time.perf_counter()
        results = await engine.generate(requests)
        seconds = time.perf_counter() - started
        if len(results) != len(requests):
            raise RuntimeError(
                f"{side} engine returned {len(results)} results for {len(requests)} requests"
            )
        if side == "local":
            self._record(side, purpose, round, engine.model, results, seconds)
        else:
            # One record per remote request, each with its share of the batch's wall time, priced
            # by the model that answered (a dated snapshot has its own price entry).
            for result in results:
                record = self._record(
                    side,
                    purpose,
                    round,
                    result.model or engine.model,
                    [result],
                    seconds / len(results),
                )
                await self.events.emit("remote_call", record.model_dump())
        return results

    async def generate_one(
        self, side: Side, purpose: str, request: GenerationRequest, *, round: int
    ) -> GenerationResult:
        return (await self.generate(side, purpose, [request], round=round))[0]

    def _record(
        self,
        side: Side,
        purpose: str,
        round: int,
        model: str,
        results: Sequence[GenerationResult],
        seconds: float,
    ) -> CallRecord:
        usage = Usage.sum([result.usage for result in results])
        record = CallRecord(
            side=side,
            purpose=purpose,
            round=round,
            model=model,
            requests=len(results),
            usage=TokenCounts.of(usage),
            seconds=seconds,
            cost_usd=self.prices.cost(model, usage),
            finish_reasons=[result.finish_reason for result in results],
        )
        self.calls.append(record)
        return record

    def records(self, side: Side) -> list[CallRecord]:
        return [call for call in self.calls if call.side == side]

    def usage(self, side: Side) -> Usage:
        return Usage.sum([call.usage.as_usage() for call in self.records(side)])

    def seconds(self, side: Side) -> float:
        return sum(call.seconds for call in self.records(side))

    def cost(self, side: Side) -> float:
        return sum(call.cost_usd for call in self.records(side))

    def requests(self, side: Side) -> int:
        return sum(call.requests for call in self.records(side))
