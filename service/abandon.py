"""Stopping costly work whose caller has gone: an HTTP handler keeps running after its client
closes the connection, so work such as parsing an uploaded PDF is raced against a probe that
says whether the caller is still there."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from service.errors import GatewayError

T = TypeVar("T")
Abandoned = Callable[[], Awaitable[bool]]  # e.g. Starlette's ``request.is_disconnected``
POLL_S = 0.25


class ClientClosedRequest(GatewayError):
    """The client left before the answer was ready; the work was stopped. (Nobody reads it.)"""

    status_code, type = 499, "client_closed_request"


async def unless_abandoned(abandoned: Abandoned | None, work: Coroutine[Any, Any, T]) -> T:
    """The result of ``work``; cancelled (its child processes killed) once ``abandoned()``."""
    if abandoned is None:
        return await work
    job = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({job}, timeout=POLL_S)
            if done:
                return job.result()
            if await abandoned():
                raise ClientClosedRequest("the client closed the connection; the work was stopped")
    finally:
        if not job.done():
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
