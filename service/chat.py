"""OpenAI-compatible chat completions over the protocols.

``model`` picks the protocol (``minions``, ``minion``, ``local``, ``remote``, optionally with a
remote model: ``minions:gpt-4o``). The last user message is the question; the other system and
user messages are the documents, with any ``document_ids``; assistant turns are ignored. With no
document at all, the question's own message is the document. The task runs in the request (not
the queue), so a client that disconnects aborts it; its usage is billed either way.

``ChatService`` owns a completion from end to end: the budget reservation (given back when the
task never started), the run, the client's disconnect, and the OpenAI chunks of a stream. A
route makes one call into it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

from protocols import Result, Task, protocol_class
from protocols.task import Document, Options
from service.chat_schemas import ChatCompletionRequest, Model
from service.documents import DocumentService
from service.errors import InvalidRequest, ModelNotFound, describe, envelope, short_message
from service.execution import TaskExecutor
from service.pool import EnginePool
from service.privacy import with_privacy
from service.settings import Settings
from service.store import ApiKey, Store
from service.tasks import BudgetService

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


# Waits for the client's next ASGI message (``request.receive``): how a disconnect is noticed.
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


@dataclass
class PreparedChat:
    protocol: str
    remote_model: str | None
    task: Task
    reserved_nano: int
    cap_usd: float | None
    started: bool = False


class ChatService:
    def __init__(
        self,
        store: Store,
        pool: EnginePool,
        documents: DocumentService,
        budgets: BudgetService,
        executor: TaskExecutor,
        settings: Settings,
    ) -> None:
        self.store = store
        self.pool = pool
        self.documents = documents
        self.budgets = budgets
        self.executor = executor
        self.settings = settings

    def models(self) -> list[Model]:
        models = [Model(id=name, description=DESCRIPTIONS[name]) for name in MODEL_PROTOCOLS]
        if not self.pool.stand_in:
            # A remote model can be named for every protocol that calls the remote.
            remote_protocols = [
                name
                for name, protocol in MODEL_PROTOCOLS.items()
                if protocol_class(protocol).max_remote_calls(Options()) > 0
            ]
            for remote in self.pool.remote_models():
                for name in remote_protocols:
                    models.append(Model(id=f"{name}:{remote}", description=DESCRIPTIONS[name]))
        return models

    async def complete(self, key: ApiKey, body: ChatCompletionRequest, receive: Receive) -> Any:
        """The ``ChatCompletion`` body, as plain data (no second validation on the way out).
        Raises ``ClientDisconnected`` when the client left first (the task is aborted)."""
        prepared = await self._prepare(key, body)
        try:
            result = await _until_disconnect(receive, self._run(key, prepared))
        finally:
            await self._release_if_unstarted(key, prepared)
        return completion(body.model, result, completion_id())

    async def stream(self, key: ApiKey, body: ChatCompletionRequest) -> AsyncIterator[str]:
        """The stream's SSE data lines. Admission errors raise here, before anything is sent;
        the task starts now, so its reservation is settled even if the stream is never read."""
        prepared = await self._prepare(key, body)
        job = asyncio.ensure_future(self._run(key, prepared))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return self._chunks(body.model, completion_id(), include_usage, job, key, prepared)

    async def _chunks(
        self,
        model: str,
        completion_id_: str,
        include_usage: bool,
        job: asyncio.Future[Result],
        key: ApiKey,
        prepared: PreparedChat,
    ) -> AsyncIterator[str]:
        """OpenAI chunks: the role at once, the answer when it is known, then ``[DONE]``. A
        client that disconnects cancels this generator, and with it the task."""
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            return json.dumps(
                {
                    "id": completion_id_,
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
            await asyncio.shield(self._release_if_unstarted(key, prepared))
        yield chunk({"content": result.answer})
        yield chunk({}, "stop", minions=report(result))
        if include_usage:
            yield json.dumps(
                {
                    "id": completion_id_,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage_of(result),
                }
            )
        yield "[DONE]"

    def _resolve_model(self, model: str) -> tuple[str, str | None]:
        name, _, remote = model.partition(":")
        if name not in MODEL_PROTOCOLS or (remote and name == "local"):
            raise ModelNotFound(
                f"model {model!r} does not exist; choose one of {', '.join(MODEL_PROTOCOLS)} "
                "(or minions:<remote-model>); see GET /v1/models",
                param="model",
            )
        try:
            self.pool.remote_for(remote or None)
        except InvalidRequest as exc:
            raise ModelNotFound(exc.message, param="model") from None
        return MODEL_PROTOCOLS[name], remote or None

    async def _prepare(self, key: ApiKey, body: ChatCompletionRequest) -> PreparedChat:
        protocol, remote_model = self._resolve_model(body.model)
        questions = [
            i for i, m in enumerate(body.messages) if m.role == "user" and m.text().strip()
        ]
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
                await self.documents.by_id(key, document_id, f"document_ids.{i}")
                for i, document_id in enumerate(body.document_ids)
            ]
            documents += [doc.document for doc in stored]
        if not documents:
            documents.append(text_document("message", question))
        if len(documents) > self.settings.max_documents:
            raise InvalidRequest(
                f"messages: {len(documents)} documents; the limit is {self.settings.max_documents}",
                param="messages",
            )
        tokens = sum([await self.documents.count_tokens(doc) for doc in documents])
        self.documents.check_tokens(tokens, "messages")
        task_options = body.minions_options
        options = task_options.protocol_options() if task_options else {}
        with_privacy(options, key, self.settings)
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
        remote = self.pool.remote(remote_model)
        reserved, cap = await self.budgets.reserve(
            key,
            protocol,
            task.options,
            remote,
            task_options.max_cost_usd if task_options else None,
            await self.budgets.baseline(task, protocol, task.options, remote),
        )
        return PreparedChat(protocol, remote_model, task, reserved, cap)

    async def _run(self, key: ApiKey, prepared: PreparedChat) -> Result:
        prepared.started = True  # from here on, run_inline settles the reservation
        return await self.executor.run_inline(
            key_id=key.id,
            protocol=prepared.protocol,
            task=prepared.task,
            remote_model=prepared.remote_model,
            reserved_nano=prepared.reserved_nano,
            cap_usd=prepared.cap_usd,
        )

    async def _release_if_unstarted(self, key: ApiKey, prepared: PreparedChat) -> None:
        """A request that ended before its task started gives its reservation back."""
        if not prepared.started and prepared.reserved_nano:
            prepared.started = True
            await self.store.api_keys.settle(key.id, prepared.reserved_nano, 0)


async def _until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work`` here; if the client goes away first, cancel it and raise
    ClientDisconnected."""
    current = asyncio.current_task()
    assert current is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
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
        # What remote_only would have sent and cost for the same question (counted, not run).
        "baseline": result.baseline.model_dump(),
        "warnings": result.warnings,
        # The summary; the full audit trail (every text that crossed) is kept by /v1/tasks.
        "privacy": result.privacy.model_dump(exclude={"crossed", "crossed_left_out"})
        if result.privacy
        else None,
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
