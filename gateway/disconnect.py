"""Stopping work whose client has left: a request handler keeps running after the client closes
the connection, so costly work (parsing an uploaded PDF) is raced against the disconnect."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request

from service.errors import GatewayError

T = TypeVar("T")
POLL_S = 0.25


class ClientClosedRequest(GatewayError):
    """The client left before the answer was ready; the work was stopped. (Nobody reads it.)"""

    status_code, type = 499, "client_closed_request"


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """The result of ``work``; cancelled (its child processes killed) when the client leaves."""
    job = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({job}, timeout=POLL_S)
            if done:
                return job.result()
            if await request.is_disconnected():
                raise ClientClosedRequest("the client closed the connection; the work was stopped")
    finally:
        if not job.done():
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
