"""The single door every model call of a protocol goes through, so none escapes the bill.

A protocol never calls ``engine.generate`` itself: it calls ``Recorder.generate``, which times the
call, records each result's usage (one record per remote request, one per local batch), prices the
remote side, and emits the ``remote_call`` event. Totals in the Result are sums of these records,
so "sum of per-call usage equals the reported total" holds by construction and is tested.

It is also where the task's remote budget is enforced (``protocols.cost_guard``: a remote call
that does not fit is never sent) and where a greedy request is never sent twice: temperature 0
gives the same reply to the same request, so a repeat (a duplicate job, a sample at temperature
0) is answered from the first reply and costs nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from engines.base import Engine, GenerationRequest, GenerationResult
from engines.errors import EngineError
from engines.prices import PriceTable
from engines.usage import Usage
from protocols.cost_guard import CostGuard
from protocols.result import CallRecord, TokenCounts

logger = logging.getLogger(__name__)

Side = Literal["local", "remote"]
T = TypeVar("T")
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
    def __init__(
        self,
        local: Engine,
        remote: Engine,
        prices: PriceTable,
        events: Events,
        guard: CostGuard | None = None,
    ) -> None:
        self.engines: dict[Side, Engine] = {"local": local, "remote": remote}
        self.prices = prices
        self.events = events
        self.guard = guard or CostGuard(0, None)
        self.calls: list[CallRecord] = []
        self._greedy: dict[tuple[Side, str], GenerationResult] = {}

    def remote_prompt_tokens(self, request: GenerationRequest) -> int:
        """What the guard counts for ``request`` on the remote (exact or an upper bound)."""
        return self.engines["remote"].count_prompt_tokens(request.messages)

    def affords(self, side: Side, request: GenerationRequest, reserve: int = 0) -> bool:
        """Whether the remote budget pays for ``request`` and still keeps ``reserve`` tokens."""
        if side == "local":
            return True
        return self.guard.affords(self.remote_prompt_tokens(request) + reserve)

    async def generate(
        self, side: Side, purpose: str, requests: Sequence[GenerationRequest], *, round: int
    ) -> list[GenerationResult]:
        async def send(sent: list[GenerationRequest]) -> list[GenerationResult]:
            if side == "remote":
                self.guard.admit(sum(self.remote_prompt_tokens(r) for r in sent), purpose)
            return await self._send(side, purpose, sent, round)

        return await self._once(side, requests, send)

    async def _once(
        self,
        side: Side,
        requests: Sequence[GenerationRequest],
        send: Callable[[list[GenerationRequest]], Awaitable[list[T]]],
    ) -> list[T | GenerationResult]:
        """``send`` for the requests not answered before: a greedy request already answered
        (in this task, or earlier in this batch) gets that answer again, without a call."""
        keys = [_greedy_key(side, request) for request in requests]
        sent: list[GenerationRequest] = []
        slots: list[int] = []  # each request's index in ``sent``, or -1: answered before
        pending: dict[tuple[Side, str], int] = {}
        for key, request in zip(keys, requests, strict=True):
            if key is not None and key in self._greedy:
                slots.append(-1)
            elif key is not None and key in pending:
                slots.append(pending[key])
            else:
                if key is not None:
                    pending[key] = len(sent)
                slots.append(len(sent))
                sent.append(request)
        outcomes = await send(sent) if sent else []
        for key, index in pending.items():
            outcome = outcomes[index]
            # Never keep a failure: a failed request may be sent again.
            if isinstance(outcome, GenerationResult) and outcome.finish_reason in (
                "stop",
                "length",
            ):
                self._greedy[key] = outcome
        answered: list[T | GenerationResult] = []
        for key, index in zip(keys, slots, strict=True):
            answered.append(outcomes[index] if index >= 0 else self._greedy[key])  # type: ignore[index]
        return answered

    async def _send(
        self, side: Side, purpose: str, requests: Sequence[GenerationRequest], round: int
    ) -> list[GenerationResult]:
        engine = self.engines[side]
        results, seconds = await _timed(side, engine.generate(requests), len(requests))
        if side == "local":
            self._record(side, purpose, round, engine.model, results, seconds)
        else:
            # One record per remote request, each with its share of the batch's wall time, priced
            # as the model asked for: the name in a reply is the provider's word, and a renamed
            # deployment must not make a call free (it is recorded beside the price's model).
            for request, result in zip(requests, results, strict=True):
                self.guard.charge(result.usage.prompt_tokens, self.remote_prompt_tokens(request))
                record = self._record(
                    side, purpose, round, engine.model, [result], seconds / len(results)
                )
                if result.model and result.model != engine.model:
                    record.reply_model = result.model
                await self.events.emit("remote_call", record.model_dump())
        return results

    async def generate_settled(
        self, side: Side, purpose: str, requests: Sequence[GenerationRequest], *, round: int
    ) -> list[GenerationResult | EngineError | ValueError]:
        """Like ``generate`` for the local side, but a request that fails yields its error in its
        place and fails alone; the batch's record counts it with finish reason ``error``."""
        engine = self.engines[side]

        async def send(
            sent: list[GenerationRequest],
        ) -> list[GenerationResult | EngineError | ValueError]:
            outcomes, seconds = await _timed(side, engine.generate_settled(sent), len(sent))
            results = [outcome for outcome in outcomes if isinstance(outcome, GenerationResult)]
            failed = [outcome for outcome in outcomes if not isinstance(outcome, GenerationResult)]
            self._record(
                side,
                purpose,
                round,
                engine.model,
                results,
                seconds,
                failed=len(failed),
                failed_waits=[getattr(error, "queued_s", 0.0) for error in failed],
            )
            return outcomes

        return await self._once(side, requests, send)

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
        failed: int = 0,
        failed_waits: Sequence[float] = (),
    ) -> CallRecord:
        usage = Usage.sum([result.usage for result in results])
        # Each request's wait travels on its own result (or error): a run that shares the engine
        # with other runs is charged only for its own requests' waits.
        waits = [result.queued_s for result in results] + list(failed_waits)
        record = CallRecord(
            side=side,
            purpose=purpose,
            round=round,
            model=model,
            requests=len(results) + failed,
            usage=TokenCounts.of(usage),
            seconds=seconds,
            queued_s=sum(waits),
            max_queued_s=max(waits, default=0.0),
            cost_usd=self.prices.cost(model, usage),
            finish_reasons=[str(result.finish_reason) for result in results] + ["error"] * failed,
        )
        self.calls.append(record)
        return record

    def records(self, side: Side) -> list[CallRecord]:
        return [call for call in self.calls if call.side == side]

    def usage(self, side: Side) -> Usage:
        return Usage.sum([call.usage.as_usage() for call in self.records(side)])

    def seconds(self, side: Side) -> float:
        return sum(call.seconds for call in self.records(side))

    def queue_wait(self, side: Side) -> tuple[float, float]:
        """Summed and longest seconds ``side``'s requests waited in its engine's own queue."""
        records = self.records(side)
        return (
            sum(call.queued_s for call in records),
            max((call.max_queued_s for call in records), default=0.0),
        )

    def cost(self, side: Side) -> float:
        return sum(call.cost_usd for call in self.records(side))

    def requests(self, side: Side) -> int:
        return sum(call.requests for call in self.records(side))


async def _timed(side: Side, call: Awaitable[list[T]], expected: int) -> tuple[list[T], float]:
    """``call``'s answers and the seconds it took; one answer per request, or a RuntimeError."""
    started = time.perf_counter()
    answers = await call
    seconds = time.perf_counter() - started
    if len(answers) != expected:
        raise RuntimeError(f"{side} engine returned {len(answers)} answers for {expected} requests")
    return answers, seconds


def _greedy_key(side: Side, request: GenerationRequest) -> tuple[Side, str] | None:
    """A greedy request's identity (the seed changes nothing at temperature 0), None if sampled."""
    if request.temperature != 0:
        return None
    return side, request.model_dump_json(exclude={"seed"})
