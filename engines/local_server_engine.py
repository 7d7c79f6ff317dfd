"""A local model behind an OpenAI-compatible server (llama.cpp, Ollama, LM Studio, ``vllm serve``)
as a first-class local engine: a busy machine may make work slow, never lose it.

* Concurrency matches the server: at most ``max_concurrency`` requests in flight (default: the
  server's slots, else its family's default, see ``server_probe``); the rest wait in a client-side
  queue, and that wait is measured on its own (``stats``; per request, ``queued_s`` on its result
  or error), never counted against a request.
* Every request streams. It is timed out only when no event arrives for ``stall_timeout_s`` after
  it was sent (llama.cpp reports prompt progress, so a long prompt is not a stall), or when it
  passes the whole-request ``deadline_s``. A timed-out request is never re-sent: that would only
  double the server's work. Connection errors and 5xx/429 answers are retried with exponential
  backoff and jitter, honouring ``Retry-After``.
* Cancelled means stopped: cancelling a call closes its streams, and llama.cpp and vLLM stop
  decoding a request whose client went away.
* Tokens are counted by the server where it can (``/tokenize``), else by a tokenizer the operator
  names, else estimated on the long side with a warning; the context window is the server's.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import openai

from engines.base import (
    Engine,
    GenerationRequest,
    GenerationResult,
    gather_in_order,
    gather_settled,
    validate_continuations,
)
from engines.errors import (
    EngineCapabilityError,
    EngineConfigError,
    EngineError,
    EngineTimeoutError,
    RemoteAPIError,
)
from engines.openai_engine import chat_options, short
from engines.server_probe import ServerInfo, ServerUnreachableError, probe_server
from engines.token_counting import (
    ServerTokenCounter,
    TokenCounter,
    safe_estimate_tokens,
    tokenizer_counter,
)
from engines.usage import Usage

logger = logging.getLogger(__name__)

try:  # the openai SDK's own HTTP client; a broken stream raises its errors, not httpx's
    import httpx2

    _TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError, httpx2.TransportError)
    _TIMEOUT_ERRORS: tuple[type[Exception], ...] = (httpx.TimeoutException, httpx2.TimeoutException)
except ImportError:  # older SDKs use httpx itself
    _TRANSPORT_ERRORS = (httpx.TransportError,)
    _TIMEOUT_ERRORS = (httpx.TimeoutException,)

_CONNECTION_ERRORS: tuple[type[Exception], ...] = (openai.APIConnectionError, *_TRANSPORT_ERRORS)
_FINISH = {"stop": "stop", "length": "length", "content_filter": "stop", "tool_calls": "stop"}
_RETRY_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
_MAX_BACKOFF_S = 30.0
DEFAULT_CONTEXT_WINDOW = 4096


@dataclass
class QueueStats:
    """What the client-side queue saw, for the doctor, benchmarks and logs."""

    requests: int = 0
    queued_s: float = 0.0
    max_queued_s: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    retries: int = 0
    stalls: int = 0
    cancelled: int = 0


class _Retryable(Exception):
    """A failed attempt worth another: connection lost, or a 5xx/429 answer."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LocalServerEngine(Engine):
    kind = "openai"
    supports_score = False
    isolates_failures = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None,
        api_key: str | None = None,
        max_concurrency: int | None = None,
        stall_timeout_s: float = 120.0,
        deadline_s: float = 1800.0,
        max_retries: int = 3,
        context_window: int | None = None,
        tokenizer: str | None = None,
        connect_timeout_s: float = 10.0,
        backoff_s: float = 0.5,
        info: ServerInfo | None = None,
    ) -> None:
        if not base_url:
            raise EngineConfigError(
                "local_base_url", "MGW_LOCAL_ENGINE=openai needs the server's URL"
            )
        if not model:
            raise EngineConfigError("local_model", "a model name is required")
        for name, value in (
            ("local_stall_timeout_s", stall_timeout_s),
            ("local_deadline_s", deadline_s),
        ):
            if value <= 0:
                raise EngineConfigError(name, f"must be positive, got {value}")
        self.base_url = base_url
        self.stall_timeout_s = stall_timeout_s
        self.deadline_s = deadline_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.stats = QueueStats()
        self.warnings: list[str] = []
        if info is None:
            try:
                info = probe_server(base_url, model=model, api_key=api_key)
            except ServerUnreachableError as exc:
                self._warn(
                    f"local: cannot reach {base_url} to ask what it serves ({exc}); using "
                    "conservative defaults until restarted with the server up"
                )
        self.info = info
        super().__init__(model=model, context_window=self._window(context_window))
        self.max_concurrency = max_concurrency or (info.concurrency if info else 1)
        self._semaphore = asyncio.Semaphore(self.max_concurrency)
        self._server_counter: ServerTokenCounter | None = None
        self.token_source, self._count = self._counter(tokenizer, api_key)
        # Detected once, here: instance values over the class's defaults.
        vars(self)["supports_json_schema"] = (
            info is not None and info.structured == "response_format"
        )
        vars(self)["supports_score"] = (
            info is not None and info.prompt_logprobs and self._server_counter is not None
        )
        if info is not None and info.structured == "none":
            self._warn(
                f"local: {base_url} does not accept JSON schemas (response_format); job outputs "
                "are asked for in the prompt only, so more replies may be unparseable"
            )
        self._extra_body = {"return_progress": True} if info and info.progress_events else {}
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            max_retries=0,  # retries are ours: never for a timed-out request
            timeout=openai.Timeout(deadline_s, connect=connect_timeout_s),
        )

    # -- what the server said -----------------------------------------------------------------
    def _warn(self, message: str) -> None:
        logger.warning("%s", message)
        self.warnings.append(message)

    def _window(self, configured: int | None) -> int:
        served = self.info.context_window if self.info else None
        if served is None:
            if configured is None:
                self._warn(
                    f"local: the server did not report its context window; assuming "
                    f"{DEFAULT_CONTEXT_WINDOW} tokens (set MGW_LOCAL_MAX_MODEL_LEN)"
                )
                return DEFAULT_CONTEXT_WINDOW
            return configured
        if configured is not None and configured < served:
            return configured  # the operator asked for less than the server allows
        if configured is not None and configured > served:
            self._warn(
                f"local: MGW_LOCAL_MAX_MODEL_LEN={configured} is more than the server's context "
                f"window ({served} tokens per request); using {served}"
            )
        return served

    def _counter(self, tokenizer: str | None, api_key: str | None) -> tuple[str, TokenCounter]:
        if self.info is not None and self.info.tokenize is not None:
            self._server_counter = ServerTokenCounter(
                self.info.root_url, self.info.tokenize, model=self.model, api_key=api_key
            )
            return "server", self._server_counter.count
        if tokenizer:
            return "tokenizer", tokenizer_counter(tokenizer)
        self._warn(
            "local: token counts are estimated (3 characters a token, on the safe side): the "
            "server has no tokenize endpoint and no tokenizer was named (MGW_LOCAL_TOKENIZER: a "
            "Hugging Face tokenizer id or local path)"
        )
        return "estimate", safe_estimate_tokens

    def count_tokens(self, text: str) -> int:
        try:
            return self._count(text)
        except httpx.HTTPError as exc:
            raise EngineError(f"local: {self.base_url} could not count tokens: {exc}") from exc

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "server": self.info.describe() if self.info else None,
            "max_concurrency": self.max_concurrency,
            "token_counts": self.token_source,
            "stall_timeout_s": self.stall_timeout_s,
            "deadline_s": self.deadline_s,
            "queue": asdict(self.stats),
        }

    # -- generation -----------------------------------------------------------------------------
    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        # All or nothing: the first failure cancels (and so stops) the others.
        return await gather_in_order([self._queued(r) for r in requests], max(len(requests), 1))

    async def generate_settled(
        self, requests: Sequence[GenerationRequest]
    ) -> list[GenerationResult | EngineError | ValueError]:
        return await gather_settled([self._queued(r) for r in requests])

    async def _queued(self, request: GenerationRequest) -> GenerationResult:
        entered = time.monotonic()
        async with self._semaphore:
            waited = time.monotonic() - entered
            stats = self.stats
            stats.requests += 1
            stats.queued_s += waited
            stats.max_queued_s = max(stats.max_queued_s, waited)
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                result = await self._with_retries(request)
            except asyncio.CancelledError:
                stats.cancelled += 1
                raise
            except EngineError as exc:
                exc.queued_s = waited
                raise
            finally:
                stats.in_flight -= 1
        # On the result, not only in ``stats``: runs sharing this engine each count their own.
        return replace(result, queued_s=waited)

    async def _with_retries(self, request: GenerationRequest) -> GenerationResult:
        deadline = time.monotonic() + self.deadline_s
        attempt = 0
        while True:
            try:
                return await self._stream(request, deadline)
            except _Retryable as exc:
                attempt += 1
                if attempt > self.max_retries:
                    raise EngineError(
                        f"local: {exc} (gave up after {self.max_retries} retries)"
                    ) from exc
                delay = exc.retry_after_s
                if delay is None:
                    delay = min(_MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1))
                    delay *= 0.5 + random.random()  # jitter: parallel requests do not sync up
                if time.monotonic() + delay > deadline:
                    raise EngineTimeoutError(
                        f"local: {exc}; no time left before the request's deadline "
                        f"({self.deadline_s:g} s) to retry"
                    ) from exc
                self.stats.retries += 1
                logger.info("local: %s; retrying in %.1f s (retry %d)", exc, delay, attempt)
                await asyncio.sleep(delay)

    async def _stream(self, request: GenerationRequest, deadline: float) -> GenerationResult:
        kwargs = chat_options(request, json_schema=self.supports_json_schema)
        stream: Any = None
        try:
            stream = await self._next(
                self._client.chat.completions.create(  # type: ignore[call-overload]
                    model=self.model,
                    messages=[m.model_dump() for m in request.messages],
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    top_p=request.top_p,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_body=self._extra_body or None,
                    **kwargs,
                ),
                deadline,
                "answering",
            )
            return await self._collect(stream, deadline)
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from exc
        except _CONNECTION_ERRORS as exc:
            if isinstance(exc, (openai.APITimeoutError, *_TIMEOUT_ERRORS)):
                raise self._timeout(deadline) from exc
            raise _Retryable(f"lost the connection to {self.base_url}: {_reason(exc)}") from exc
        except openai.APIError as exc:  # an error event inside the stream
            message = f"local: {self.base_url} failed mid-reply: {short(str(exc))}"
            raise EngineError(message) from exc
        finally:
            if stream is not None:
                # Closing the response drops the connection: the server stops decoding.
                await stream.close()

    async def _collect(self, stream: Any, deadline: float) -> GenerationResult:
        chunks = stream.__aiter__()
        parts: list[str] = []
        finish: str | None = None
        usage: Any = None
        model = self.model
        while True:
            try:
                chunk = await self._next(chunks.__anext__(), deadline, "streaming")
            except StopAsyncIteration:
                break
            model = getattr(chunk, "model", None) or model
            if getattr(chunk, "usage", None) is not None:
                usage = chunk.usage
            for choice in chunk.choices or ():
                if choice.delta is not None and choice.delta.content:
                    parts.append(choice.delta.content)
                if choice.finish_reason:
                    finish = choice.finish_reason
        if finish is None:
            raise _Retryable(f"{self.base_url} ended the stream before the reply was complete")
        prompt = usage.prompt_tokens if usage is not None else 0
        cached = 0
        details = getattr(usage, "prompt_tokens_details", None)
        if details is not None:
            cached = details.cached_tokens or 0
        return GenerationResult(
            text="".join(parts),
            finish_reason=_FINISH.get(finish, "stop"),  # type: ignore[arg-type]
            usage=Usage(
                prompt_tokens=prompt,
                completion_tokens=usage.completion_tokens if usage is not None else 0,
                cached_prompt_tokens=min(cached, prompt),
            ),
            model=self.model if model == "-" else model,
        )

    async def _next(self, awaitable: Any, deadline: float, stage: str) -> Any:
        """``awaitable``'s value, or a timeout when the server goes quiet for the stall timeout
        or the request passes its deadline."""
        left = deadline - time.monotonic()
        try:
            return await asyncio.wait_for(awaitable, min(self.stall_timeout_s, max(left, 0.0)))
        except TimeoutError:
            raise self._timeout(deadline) from None

    def _timeout(self, deadline: float) -> EngineTimeoutError:
        if time.monotonic() >= deadline - 0.01:
            return EngineTimeoutError(
                f"local: {self.base_url} did not finish within the request deadline "
                f"({self.deadline_s:g} s); not re-sent"
            )
        self.stats.stalls += 1
        return EngineTimeoutError(
            f"local: {self.base_url} stalled: nothing for {self.stall_timeout_s:g} s "
            "(MGW_LOCAL_STALL_TIMEOUT_S); not re-sent, which would repeat the work"
        )

    def _status_error(self, exc: openai.APIStatusError) -> Exception:
        where = self.base_url
        status = exc.status_code
        if status in _RETRY_STATUS:
            return _Retryable(
                f"{where} answered {status}: {short(exc.message)}",
                _retry_after(exc.response),
            )
        if status == 401:
            return RemoteAPIError(f"local_api_key: rejected by {where} (401)", status)
        if status == 404:
            return RemoteAPIError(f"local_model: {self.model!r} not found at {where} (404)", status)
        return RemoteAPIError(f"local: {where} answered {status}: {short(exc.message)}", status)

    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        """Teacher-forced log-probabilities through the server, where it returns the prompt's
        (``vllm serve``: ``/v1/completions`` with ``echo`` and ``logprobs``). Each continuation
        is tokenized on its own by the server and appended to the prefix as ids."""
        if not self.supports_score or self._server_counter is None:
            family = self.info.family if self.info else "the server"
            raise EngineCapabilityError(
                f"score: {family} at {self.base_url} cannot return the log-probabilities of a "
                "given text (llama.cpp ignores `echo`); mutual information needs `vllm serve` "
                "or the in-process vllm engine"
            )
        validate_continuations(continuations)
        counter = self._server_counter
        prefix_ids = await asyncio.to_thread(counter.ids, prefix)
        if not prefix_ids:
            raise ValueError("prefix: empty prefix gives the first token nothing to condition on")

        async def one(continuation: str) -> float:
            ids = await asyncio.to_thread(counter.ids, continuation)
            prompt = prefix_ids + ids
            if len(prompt) >= self.context_window:
                raise ValueError(
                    f"prefix: prefix and continuation take {len(prompt)} tokens; the context is "
                    f"{self.context_window}"
                )
            async with self._semaphore:
                logprobs = await self._prompt_logprobs(prompt)
            return float(sum(logprobs[len(prefix_ids) : len(prompt)]))

        return list(await gather_in_order([one(c) for c in continuations], len(continuations)))

    async def _prompt_logprobs(self, prompt_ids: list[int]) -> list[float]:
        try:
            response = await self._client.completions.create(
                model=self.model,
                prompt=prompt_ids,
                max_tokens=1,
                temperature=0.0,
                echo=True,
                logprobs=0,
            )
        except openai.APIStatusError as exc:
            raise RemoteAPIError(
                f"local: {self.base_url} could not score ({exc.status_code}): {short(exc.message)}",
                exc.status_code,
            ) from exc
        except _CONNECTION_ERRORS as exc:
            raise EngineError(f"local: cannot reach {self.base_url} to score: {exc}") from exc
        logprobs = response.choices[0].logprobs if response.choices else None
        values = list(logprobs.token_logprobs or []) if logprobs is not None else []
        if len(values) < len(prompt_ids) or any(v is None for v in values[1 : len(prompt_ids)]):
            raise EngineError(
                f"local: {self.base_url} did not return the prompt's log-probabilities"
            )
        return [0.0 if v is None else float(v) for v in values[: len(prompt_ids)]]

    async def aclose(self) -> None:
        await self._client.close()
        if self._server_counter is not None:
            self._server_counter.close()


def _retry_after(response: Any) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if response is None:
        return None
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
