"""Running requests together: the first failure (or a cancellation) stops the others; settled
gathering fails a request alone."""

from __future__ import annotations

import asyncio

import pytest

from engines.base import gather_in_order, gather_settled
from engines.errors import EngineError


async def slow(n: int, cancelled: list[int]) -> int:
    """Sleeps long; notes in ``cancelled`` that it was cancelled."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        cancelled.append(n)
        raise
    return n


async def test_the_first_failure_cancels_the_others_before_it_is_raised() -> None:
    cancelled: list[int] = []

    async def failing() -> int:
        await asyncio.sleep(0.01)
        raise EngineError("local: boom")

    with pytest.raises(EngineError, match="boom"):
        await gather_in_order([slow(1, cancelled), failing(), slow(2, cancelled)], limit=3)
    assert sorted(cancelled) == [1, 2]  # nothing runs on unobserved


async def test_settled_failures_stay_in_place_and_the_rest_is_kept() -> None:
    async def ok(n: int) -> int:
        await asyncio.sleep(0.01 * n)
        return n

    async def failing() -> int:
        raise EngineError("local: one request failed")

    outcomes = await gather_settled([ok(1), failing(), ok(3)])
    assert outcomes[0] == 1 and outcomes[2] == 3
    assert isinstance(outcomes[1], EngineError)


async def test_cancelling_a_settled_batch_cancels_every_unfinished_request() -> None:
    cancelled: list[int] = []
    batch = asyncio.create_task(gather_settled([slow(n, cancelled) for n in (1, 2, 3)]))
    await asyncio.sleep(0.05)
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert sorted(cancelled) == [1, 2, 3]
