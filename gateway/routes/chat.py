"""``/v1/chat/completions`` and ``/v1/models``: the OpenAI-compatible front door."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from gateway.auth import CurrentKey
from gateway.deps import ServicesDep
from service.chat import ClientDisconnected
from service.chat_schemas import ChatCompletion, ChatCompletionRequest, ModelList
from service.schemas import ErrorEnvelope

router = APIRouter(prefix="/v1", tags=["openai"])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (401, 402, 404, 413, 422, 429, 502)
}


@router.get("/models", response_model=ModelList, responses=ERRORS)
async def list_models(key: CurrentKey, services: ServicesDep) -> ModelList:
    return ModelList(data=services.chat.models())


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(
    body: ChatCompletionRequest, key: CurrentKey, services: ServicesDep, request: Request
) -> Any:
    if body.stream:
        chunks = await services.chat.stream(key, body)
        return EventSourceResponse(chunks, ping=10, send_timeout=30)
    try:
        return JSONResponse(await services.chat.complete(key, body, request.receive))
    except ClientDisconnected:
        return Response(status_code=499)
