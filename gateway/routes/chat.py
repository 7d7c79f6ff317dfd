"""``/v1/chat/completions`` and ``/v1/models``: the OpenAI-compatible front door."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from gateway.auth import CurrentKey
from gateway.deps import ServicesDep
from gateway.errors import envelope
from protocols import Result
from service import chat
from service.chat_schemas import ChatCompletion, ChatCompletionRequest, ModelList
from service.errors import describe
from service.schemas import ErrorEnvelope

router = APIRouter(prefix="/v1", tags=["openai"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (401, 402, 404, 413, 422, 429, 502)
}


@router.get("/models", response_model=ModelList, responses=ERRORS)
async def list_models(key: CurrentKey, services: ServicesDep) -> ModelList:
    return ModelList(data=chat.list_models(services))


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(
    body: ChatCompletionRequest, key: CurrentKey, services: ServicesDep, request: Request
) -> Any:
    prepared = await chat.prepare(key, body, services)
    completion_id = chat.completion_id()
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        # Started now, so the reservation is settled even if the stream is never read.
        job = asyncio.ensure_future(chat.run(key, prepared, services))
        return EventSourceResponse(
            _stream(body.model, completion_id, include_usage, job, key, prepared, services),
            ping=10,
            send_timeout=30,
        )
    try:
        result = await chat.until_disconnect(request, chat.run(key, prepared, services))
    except chat.ClientDisconnected:
        return Response(status_code=499)
    finally:
        await chat.release_if_unstarted(key, prepared, services)
    return JSONResponse(chat.completion(body.model, result, completion_id))


async def _stream(
    model: str,
    completion_id: str,
    include_usage: bool,
    job: asyncio.Future[Result],
    key: Any,
    prepared: chat.PreparedChat,
    services: Any,
) -> AsyncIterator[str]:
    """OpenAI chunks: the role at once, the answer when it is known, then ``[DONE]``. A client
    that disconnects cancels this generator, and with it the task."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        return json.dumps(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
        )

    try:
        yield chunk({"role": "assistant", "content": ""})
        result = await asyncio.shield(job)
    except Exception as exc:
        _, type_, message, param = describe(exc)
        yield json.dumps(envelope(type_, message, param))
        yield "[DONE]"
        return
    finally:
        if not job.done():  # the client went away: abort the task
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
        await asyncio.shield(chat.release_if_unstarted(key, prepared, services))
    yield chunk({"content": result.answer})
    yield chunk({}, "stop", minions=chat.report(result))
    if include_usage:
        yield json.dumps(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": chat.usage_of(result),
            }
        )
    yield "[DONE]"
