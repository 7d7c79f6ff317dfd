"""OpenAI-compatible chat completions over the protocols.

``model`` picks the protocol (``minions``, ``minion``, ``local``, ``remote``, optionally with a
remote model: ``minions:gpt-4o``). The last user message is the question; the other system and
user messages are the documents, with any ``document_ids``; assistant turns are ignored. With no
document at all, the question's own message is the document. The task runs in the request (not
the queue), so a client that disconnects aborts it; its usage is billed either way.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request

from protocols import Result, Task, protocol_class
from protocols.accounting import EventSink
from protocols.task import Document, Options
from service.chat_schemas import ChatCompletionRequest, Model
from service.errors import InvalidRequest, ModelNotFound, short_message
from service.services import Services
from service.store import ApiKey

T = TypeVar("T")

MODEL_PROTOCOLS = {
    "minions": "minions",
    "minion": "minion",
    "local": "local_only",
    "remote": "remote_only",
}
DESCRIPTIONS = {
    "minions": "MinionS: the remote plans jobs over chunks, the local model runs them",
    "minion": "Minion: the remote chats with the local model, which reads the documents",
    "local": "the local model alone",
    "remote": "the remote model reads everything (baseline)",
}


class ClientDisconnected(Exception):
    pass


@dataclass
class PreparedChat:
    protocol: str
    remote_model: str | None
    task: Task
    reserved_nano: int
    cap_usd: float | None
    started: bool = False


def list_models(services: Services) -> list[Model]:
    models = [Model(id=name, description=DESCRIPTIONS[name]) for name in MODEL_PROTOCOLS]
    if not services.pool.stand_in:
        for remote in services.pool.remote_models():
            for name in ("minions", "minion", "remote"):
                models.append(Model(id=f"{name}:{remote}", description=DESCRIPTIONS[name]))
    return models


def resolve_model(model: str, services: Services) -> tuple[str, str | None]:
    name, _, remote = model.partition(":")
    if name not in MODEL_PROTOCOLS or (remote and name == "local"):
        raise ModelNotFound(
            f"model {model!r} does not exist; choose one of {', '.join(MODEL_PROTOCOLS)} "
            "(or minions:<remote-model>); see GET /v1/models",
            param="model",
        )
    try:
        services.pool.remote_for(remote or None)
    except InvalidRequest as exc:
        raise ModelNotFound(exc.message, param="model") from None
    return MODEL_PROTOCOLS[name], remote or None


async def prepare(key: ApiKey, body: ChatCompletionRequest, services: Services) -> PreparedChat:
    protocol, remote_model = resolve_model(body.model, services)
    questions = [i for i, m in enumerate(body.messages) if m.role == "user" and m.text().strip()]
    if not questions:
        raise InvalidRequest(
            "messages: a user message with the question is needed", param="messages"
        )
    asked = questions[-1]
    question = body.messages[asked].text()
    documents: list[Document] = []
    for index, message in enumerate(body.messages):
        is_document = index != asked and message.role in ("system", "user", "developer")
        if is_document and message.text().strip():
            documents.append(text_document(f"message-{index}", message.text()))
    if body.document_ids:
        stored = [
            await services.documents.by_id(key, document_id, f"document_ids.{i}")
            for i, document_id in enumerate(body.document_ids)
        ]
        documents += [doc.document for doc in stored]
    if not documents:
        documents.append(text_document("message", question))
    if len(documents) > services.settings.max_documents:
        raise InvalidRequest(
            f"messages: {len(documents)} documents; the limit is {services.settings.max_documents}",
            param="messages",
        )
    tokens = sum([await services.documents.count_tokens(doc) for doc in documents])
    services.documents.check_tokens(tokens, "messages")
    task_options = body.minions_options
    options = task_options.protocol_options() if task_options else {}
    limit = body.max_completion_tokens or body.max_tokens
    side = protocol_class(protocol).answer_limit_option
    if limit is not None and side is not None:
        options.setdefault(side, max(limit, 16))
    if body.temperature is not None:
        options.setdefault("temperature", body.temperature)
    try:
        task = Task(question=question, documents=tuple(documents), options=Options(**options))
    except ValueError as exc:
        raise InvalidRequest(f"messages: {short_message(exc)}", param="messages") from None
    remote = services.pool.remote_for(remote_model)
    stand_in = services.pool.stand_in and remote_model is None
    reserved, cap = await services.budgets.reserve(
        key,
        protocol,
        task.options,
        remote,
        stand_in,
        task_options.max_cost_usd if task_options else None,
    )
    return PreparedChat(protocol, remote_model, task, reserved, cap)


async def run(
    key: ApiKey, prepared: PreparedChat, services: Services, sink: EventSink | None = None
) -> Result:
    prepared.started = True  # from here on, run_inline settles the reservation
    return await services.executor.run_inline(
        key_id=key.id,
        protocol=prepared.protocol,
        task=prepared.task,
        remote_model=prepared.remote_model,
        reserved_nano=prepared.reserved_nano,
        cap_usd=prepared.cap_usd,
        sink=sink,
    )


async def release_if_unstarted(key: ApiKey, prepared: PreparedChat, services: Services) -> None:
    """A request that ended before its task started gives its reservation back."""
    if not prepared.started and prepared.reserved_nano:
        prepared.started = True
        await services.store.api_keys.settle(key.id, prepared.reserved_nano, 0)


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` here; if the client goes away first, cancel it and raise
    ClientDisconnected."""
    current = asyncio.current_task()
    assert current is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        current.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            raise ClientDisconnected from None
        raise
    finally:
        watcher.cancel()


def text_document(name: str, text: str) -> Document:
    try:
        return Document.model_validate({"name": name, "text": text})
    except ValueError as exc:
        raise InvalidRequest(f"messages: {short_message(exc)}", param="messages") from None


def completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def report(result: Result) -> dict[str, Any]:
    return {
        "protocol": result.protocol,
        "usage": result.usage.model_dump(exclude={"remote_calls", "local_calls"}),
        "cost_usd": result.cost_usd.model_dump(),
        "timings": result.timings.model_dump(),
        "rounds": len(result.rounds),
        "remote_model": result.remote_model,
        "remote_stand_in": result.remote_stand_in,
        "warnings": result.warnings,
    }


def usage_of(result: Result) -> dict[str, int]:
    local, remote = result.usage.local, result.usage.remote
    prompt = local.prompt_tokens + remote.prompt_tokens
    completion = local.completion_tokens + remote.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion(model: str, result: Result, completion_id_: str) -> dict[str, Any]:
    """The ``ChatCompletion`` body, as plain data (no second validation on the way out)."""
    return {
        "id": completion_id_,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer},
                "finish_reason": "stop",
            }
        ],
        "usage": usage_of(result),
        "minions": report(result),
    }
