"""The one interface between everything that needs a language model and the engines that run one.

Protocols, the gateway and the analysis code only ever see ``Engine``; adapters (in-process vLLM,
any OpenAI-compatible HTTP server) live beside this module.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engines.errors import EngineError
from engines.usage import Usage

T = TypeVar("T")

Role = Literal["system", "user", "assistant"]

# Chat templates wrap each message in role markers and some add a default system prompt (the
# bundled SmolLM2's is ~20 tokens); these bound both with room to spare, for adapters that cannot
# apply the template themselves (``Engine.count_prompt_tokens``).
TEMPLATE_TOKENS_PER_CALL = 32
TEMPLATE_TOKENS_PER_MESSAGE = 8
FinishReason = Literal["stop", "length", "abort", "error"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str


class GenerationRequest(BaseModel):
    """One chat completion to run. Invalid values raise a ``ValueError`` naming the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: tuple[ChatMessage, ...] = Field(min_length=1)
    max_tokens: int = Field(default=256, gt=0)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    json_schema: dict[str, Any] | None = Field(
        default=None, description="constrain the output to JSON valid under this schema"
    )
    stop: tuple[str, ...] = ()

    @field_validator("json_schema")
    @classmethod
    def _schema_is_a_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON schema: {exc.message}") from None
            if not schema:
                raise ValueError("not a valid JSON schema: it is empty")
        return schema

    @model_validator(mode="after")
    def _prompt_not_empty(self) -> GenerationRequest:
        if not any(message.content.strip() for message in self.messages):
            raise ValueError("messages: the prompt is empty")
        return self

    @classmethod
    def from_prompt(
        cls, prompt: str, *, system: str | None = None, **options: Any
    ) -> GenerationRequest:
        messages = [ChatMessage(role="system", content=system)] if system else []
        messages.append(ChatMessage(role="user", content=prompt))
        return cls(messages=tuple(messages), **options)


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """One request's answer. ``queued_s``: seconds the request waited in the engine's own
    client-side queue before it was sent (0 for engines without one), carried on the result so a
    run counts its own requests' waits even when concurrent runs share the engine."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    model: str
    queued_s: float = 0.0


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """What to build: which adapter, which model, and adapter options."""

    kind: Literal["vllm", "openai"]
    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    options: dict[str, Any] = field(default_factory=dict)


class Engine(ABC):
    """A language model behind an async, batch-first interface."""

    kind: ClassVar[str]
    supports_json_schema: ClassVar[bool] = False
    supports_score: ClassVar[bool] = False
    # Whether one request can fail without failing the rest of its batch (see generate_settled).
    isolates_failures: ClassVar[bool] = False

    def __init__(self, model: str, context_window: int) -> None:
        self.model = model
        self.context_window = context_window

    @abstractmethod
    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Answer every request, concurrently, in order. Cancelling the call aborts the batch."""

    @abstractmethod
    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        """Summed natural-log probability of each continuation given ``prefix`` (teacher forced).

        Each continuation is tokenized on its own and appended as ids, so it has the same ids
        under every prefix.
        """

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this engine's tokenizer (an estimate where none is known)."""

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt tokens a request of ``messages`` takes, chat template included: exact where the
        adapter knows its template, otherwise an upper bound (every message's tokens plus a
        generous allowance for the role markers and any default system prompt)."""
        return (
            sum(self.count_tokens(message.content) for message in messages)
            + TEMPLATE_TOKENS_PER_CALL
            + TEMPLATE_TOKENS_PER_MESSAGE * len(messages)
        )

    async def generate_one(self, request: GenerationRequest) -> GenerationResult:
        return (await self.generate([request]))[0]

    async def generate_settled(
        self, requests: Sequence[GenerationRequest]
    ) -> list[GenerationResult | EngineError | ValueError]:
        """Like ``generate``, but a failure comes back in place of a result instead of raising.

        Engines that answer each request on its own (``isolates_failures``) fail only the request
        that failed and keep the others' results; by default the batch is one ``generate`` call,
        and its failure is every request's. Cancelling the call cancels the unfinished."""
        try:
            return list(await self.generate(requests))
        except (EngineError, ValueError) as exc:
            return [exc] * len(requests)

    async def aclose(self) -> None:  # noqa: B027 - engines without resources need no override
        """Release the engine's resources. Safe to call twice."""

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model,
            "context_window": self.context_window,
            "json_schema": self.supports_json_schema,
            "score": self.supports_score,
        }


class WrappedEngine(Engine):
    """An engine that adds something around ``inner`` (metering, checkpoints) and is otherwise
    it: same kind, model, window and capabilities; tokens and scores come from ``inner``. It owns
    nothing, so closing it leaves ``inner`` open (whoever built ``inner`` closes it)."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(model=inner.model, context_window=inner.context_window)
        vars(self).update(
            kind=inner.kind,
            supports_json_schema=inner.supports_json_schema,
            supports_score=inner.supports_score,
            isolates_failures=inner.isolates_failures,
        )
        self.inner = inner

    async def generate_settled(
        self, requests: Sequence[GenerationRequest]
    ) -> list[GenerationResult | EngineError | ValueError]:
        if not self.isolates_failures:
            return await super().generate_settled(requests)
        # Each request through this wrapper's own generate (so it meters or records each), all
        # at once: the inner engine queues or batches them itself.
        return await gather_settled([self.generate_one(request) for request in requests])

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self.inner.count_prompt_tokens(messages)

    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        return await self.inner.score(prefix, continuations)


def estimate_tokens(text: str) -> int:
    """About four characters a token for English under common BPE vocabularies, for engines
    that cannot count exactly. Only an estimate: billing always uses the usage the server
    reports."""
    return math.ceil(len(text) / 4)


def validate_continuations(continuations: Sequence[str]) -> None:
    if not continuations:
        raise ValueError("continuations: at least one continuation is needed")
    for index, text in enumerate(continuations):
        if not text:
            raise ValueError(f"continuations[{index}]: empty continuation has no tokens to score")


async def gather_in_order(coroutines: Sequence[Any], limit: int) -> list[Any]:
    """Run coroutines with at most ``limit`` in flight; results keep the input order. The first
    failure cancels the others (none runs on unobserved) and is raised once they have stopped."""
    semaphore = asyncio.Semaphore(limit)

    async def bounded(coroutine: Any) -> Any:
        async with semaphore:
            return await coroutine

    return await _gather_all([bounded(c) for c in coroutines])


async def gather_settled(
    coroutines: Sequence[Coroutine[Any, Any, T]],
) -> list[T | EngineError | ValueError]:
    """Run coroutines together; each yields its value or the ``EngineError``/``ValueError`` it
    failed with, so one failed request fails only itself. Anything else (a bug, cancellation)
    cancels the rest and is raised once they have stopped."""

    async def settle(coroutine: Coroutine[Any, Any, T]) -> T | EngineError | ValueError:
        try:
            return await coroutine
        except (EngineError, ValueError) as exc:
            return exc

    return await _gather_all([settle(c) for c in coroutines])


async def _gather_all(coroutines: Sequence[Coroutine[Any, Any, Any]]) -> list[Any]:
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        # Wait for the cancelled ones to finish their cleanup (closing streams, aborting
        # requests) before the failure or cancellation goes on.
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
