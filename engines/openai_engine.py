"""Any OpenAI-compatible chat server through the official ``openai`` SDK: OpenAI, Together,
``vllm serve``, Ollama, llama.cpp. The remote model's adapter, and a way to front a local server.

Retries (exponential backoff with jitter on 408/409/429/5xx and connection errors) are the SDK's
own; this module turns what is left into short, clear errors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import openai

from engines.base import (
    Engine,
    GenerationRequest,
    GenerationResult,
    estimate_tokens,
    gather_in_order,
)
from engines.errors import (
    EngineCapabilityError,
    EngineConfigError,
    EngineError,
    EngineTimeoutError,
    RemoteAPIError,
)
from engines.usage import Usage

_FINISH = {"stop": "stop", "length": "length", "content_filter": "stop", "tool_calls": "stop"}


class OpenAIEngine(Engine):
    kind = "openai"
    supports_json_schema = True
    supports_score = False

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        max_concurrency: int = 16,
        context_window: int = 128_000,
        token_counter: Callable[[str], int] = estimate_tokens,
    ) -> None:
        if not model:
            raise EngineConfigError("remote_model", "a model name is required")
        super().__init__(model=model, context_window=context_window)
        self.base_url = base_url
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",  # local OpenAI-compatible servers take any key
            timeout=timeout_s,
            max_retries=max_retries,
        )
        self._max_concurrency = max_concurrency
        self._count = token_counter

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    def _where(self) -> str:
        return self.base_url or "the OpenAI API"

    async def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        kwargs = chat_options(request, json_schema=True)
        try:
            response = await self._client.chat.completions.create(
                model=self.model,
                messages=[m.model_dump() for m in request.messages],  # type: ignore[misc]
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                **kwargs,
            )
        except openai.APITimeoutError as exc:
            raise EngineTimeoutError(f"remote: {self._where()} did not answer in time") from exc
        except openai.APIConnectionError as exc:
            raise EngineError(f"remote: cannot reach {self._where()}: {exc}") from exc
        except openai.AuthenticationError as exc:
            raise RemoteAPIError(
                f"remote_api_key: rejected by {self._where()} (401)", exc.status_code
            ) from exc
        except openai.NotFoundError as exc:
            raise RemoteAPIError(
                f"remote_model: {self.model!r} not found at {self._where()} (404)", exc.status_code
            ) from exc
        except openai.APIStatusError as exc:
            raise RemoteAPIError(
                f"remote: {self._where()} answered {exc.status_code}: {short(exc.message)}",
                exc.status_code,
            ) from exc
        except (openai.APIResponseValidationError, json.JSONDecodeError) as exc:
            raise RemoteAPIError(f"remote: malformed response from {self._where()}") from exc
        return self._to_result(response)

    def _to_result(self, response: Any) -> GenerationResult:
        choices = getattr(response, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise RemoteAPIError(f"remote: malformed response from {self._where()} (no choices)")
        choice = choices[0]
        usage = getattr(response, "usage", None)
        cached = 0
        if usage is not None and usage.prompt_tokens_details is not None:
            cached = usage.prompt_tokens_details.cached_tokens or 0
        prompt = usage.prompt_tokens if usage is not None else 0
        return GenerationResult(
            text=choice.message.content or "",
            finish_reason=_FINISH.get(choice.finish_reason or "stop", "stop"),  # type: ignore[arg-type]
            usage=Usage(
                prompt_tokens=prompt,
                completion_tokens=usage.completion_tokens if usage is not None else 0,
                cached_prompt_tokens=min(cached, prompt),
            ),
            model=getattr(response, "model", None) or self.model,
        )

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return await gather_in_order(
            [self._generate_one(r) for r in requests], self._max_concurrency
        )

    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        raise EngineCapabilityError(
            "score: an OpenAI-compatible chat API cannot guarantee teacher-forced continuation "
            "token ids; use the vllm engine (or a transformers scorer) for scoring"
        )

    async def aclose(self) -> None:
        await self._client.close()


def chat_options(request: GenerationRequest, *, json_schema: bool) -> dict[str, Any]:
    """The optional chat-completion arguments of ``request``: its JSON schema as
    ``response_format`` (where the server takes one), seed and stop sequences."""
    options: dict[str, Any] = {}
    if json_schema and request.json_schema is not None:
        options["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": request.json_schema, "strict": False},
        }
    if request.seed is not None:
        options["seed"] = request.seed
    if request.stop:
        options["stop"] = list(request.stop)
    return options


def short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
