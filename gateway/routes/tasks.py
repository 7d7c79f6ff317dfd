"""``/v1/tasks``: submit, read, follow (Server-Sent Events), cancel, list."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway.auth import CurrentKey, key_of
from gateway.deps import ServicesDep, services_of
from protocols.result import ProtocolName
from service.errors import InvalidRequest
from service.schemas import (
    ErrorEnvelope,
    TaskAccepted,
    TaskCreate,
    TaskList,
    TaskStatus,
    TaskView,
)
from service.tasks import view

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (401, 402, 404, 409, 413, 422, 429)
}


IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_MAX_CHARS = 255
IDEMPOTENCY_PARAMETER = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": "the same key (and body) returns the task it created first",
    "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_MAX_CHARS},
}


def idempotency_key(request: Request) -> str | None:
    # Read here and declared in openapi_extra rather than a Header parameter: FastAPI walks and
    # copies every request header to resolve one, a measurable part of the submit path's cost.
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is not None and not 1 <= len(value) <= IDEMPOTENCY_MAX_CHARS:
        raise InvalidRequest(
            f"{IDEMPOTENCY_HEADER}: must be 1 to {IDEMPOTENCY_MAX_CHARS} characters",
            param=IDEMPOTENCY_HEADER,
        )
    return value


@router.post(
    "",
    status_code=202,
    response_model=TaskAccepted,
    responses=ERRORS,
    openapi_extra={"parameters": [IDEMPOTENCY_PARAMETER]},
)
async def submit_task(body: TaskCreate, request: Request) -> JSONResponse:
    """Queue a question over documents; follow it with ``GET /v1/tasks/{id}/events``."""
    # The hottest route takes the key and the services from the request rather than as
    # dependencies, and returns its two fields as a response rather than a model FastAPI would
    # validate again: each of those costs showed in the submit rate. ``response_model`` still
    # documents the body, and the schema tests check it.
    key, services = key_of(request), services_of(request)
    record, created = await services.tasks.submit(
        key, body, idempotency_key(request), abandoned=request.is_disconnected
    )
    accepted = {"id": record.id, "status": record.status}
    if created:
        return JSONResponse(accepted, status_code=202)
    return JSONResponse(accepted, status_code=200, headers={"Idempotent-Replayed": "true"})


@router.get("", response_model=TaskList, responses=ERRORS)
async def list_tasks(
    key: CurrentKey,
    services: ServicesDep,
    status: TaskStatus | None = None,
    protocol: ProtocolName | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> TaskList:
    """Tasks of this key (all tasks for an admin key), newest first."""
    return await services.tasks.list(
        key, status=status, protocol=protocol, limit=limit, cursor=cursor
    )


@router.get("/{task_id}", response_model=TaskView, responses=ERRORS)
async def get_task(task_id: str, key: CurrentKey, services: ServicesDep) -> TaskView:
    return view(await services.tasks.get(key, task_id))


@router.delete("/{task_id}", response_model=TaskView, responses=ERRORS)
async def cancel_task(
    task_id: str,
    key: CurrentKey,
    services: ServicesDep,
    purge: Annotated[
        bool,
        Query(description="delete a finished task (record and events) now; 409 if not finished"),
    ] = False,
) -> TaskView:
    """Cancel a queued or running task. Running work is aborted; what it used is billed. With
    ``purge=true``: delete a finished task now (it is deleted MGW_TASK_TTL_S after it ended
    otherwise); the response is its last view."""
    if purge:
        return view(await services.tasks.purge(key, task_id))
    return view(await services.tasks.cancel(key, task_id))


@router.get(
    "/{task_id}/events",
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
    response_class=EventSourceResponse,
)
async def task_events(
    task_id: str,
    key: CurrentKey,
    services: ServicesDep,
    request: Request,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
) -> EventSourceResponse:
    """Server-Sent Events: the events so far, then live ones, until ``final``, ``error`` or
    ``cancelled``. Reconnect with ``Last-Event-ID`` to resume."""
    after = last_event_id if last_event_id and _valid_stream_id(last_event_id) else "0"
    events = await services.tasks.events(key, task_id, after)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        try:
            async for event in events:
                yield ServerSentEvent(data=json.dumps(event.data), event=event.type, id=event.id)
        except RedisError:
            logger.warning("event stream of %s interrupted: the store is unreachable", task_id)
            error = {"type": "unavailable", "message": "the event store is unreachable; reconnect"}
            yield ServerSentEvent(data=json.dumps(error), event="error")

    return EventSourceResponse(stream(), ping=15, send_timeout=30)


_MAX_ID_PART = 2**64 - 1  # Redis stream ids are two unsigned 64-bit integers


def _valid_stream_id(value: str) -> bool:
    """A stream id Redis accepts (``ms`` or ``ms-seq``, each below 2**64); anything else makes
    the stream replay from the start instead of failing every reconnection."""
    first, _, second = value.partition("-")
    parts = [first, second] if second else [first]
    return all(part.isascii() and part.isdigit() and int(part) <= _MAX_ID_PART for part in parts)
