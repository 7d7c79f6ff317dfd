"""In-process vLLM (``AsyncLLM``): the local engine. Batches come from concurrent requests, which
vLLM's scheduler runs together; ``score`` reads teacher-forced prompt log-probs."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Sequence
from typing import Any

from engines.base import (
    ChatMessage,
    Engine,
    GenerationRequest,
    GenerationResult,
    gather_in_order,
    gather_settled,
    validate_continuations,
)
from engines.child_guard import ChildGuard
from engines.errors import EngineConfigError, EngineError
from engines.usage import Usage

logger = logging.getLogger(__name__)

_FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "abort"}


def _cpu_defaults() -> None:
    """Settings that make vLLM usable on small CPU machines, unless the operator set them."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; the default takes far more
    # vLLM keeps one core away from its model worker by default; on small machines that halves
    # the compute (measured on 2 cores: batches 1.8x faster with none reserved, docs/benchmarks.md).
    if (os.cpu_count() or 1) <= 4:
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def _already_shut_down(timeout: float | None = None) -> None:
    """Replaces ``AsyncLLM.shutdown`` once the engine is down."""


class VLLMEngine(Engine):
    kind = "vllm"
    supports_json_schema = True
    supports_score = True
    isolates_failures = True

    def __init__(self, engine: Any, tokenizer: Any, model: str, context_window: int) -> None:
        super().__init__(model=model, context_window=context_window)
        self._engine = engine
        self._tokenizer = tokenizer
        self._closed = False
        self.child_guard: ChildGuard | None = None  # closed once the engine is down

    @classmethod
    def start(
        cls,
        model_path: str,
        *,
        model_name: str | None = None,
        max_model_len: int = 8192,
        dtype: str | None = None,
        enforce_eager: bool | None = None,
        seed: int = 0,
        max_num_seqs: int = 64,
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
    ) -> VLLMEngine:
        """Load ``model_path`` (a local directory or a hub id the user named) into vLLM."""
        import torch

        on_cpu = not torch.cuda.is_available()
        if on_cpu:
            _cpu_defaults()
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        try:
            tokenizer = AutoTokenizer.from_pretrained(model_path)
        except (OSError, ValueError) as exc:
            raise EngineConfigError("local_model", f"cannot load {model_path!r}: {exc}") from exc
        args = AsyncEngineArgs(
            model=model_path,
            served_model_name=model_name or model_path,
            max_model_len=max_model_len,
            # bf16 is several times slower than fp32 on CPUs without AVX-512 BF16.
            dtype=dtype or ("float32" if on_cpu else "auto"),  # type: ignore[arg-type]
            # Compilation costs minutes at start on CPU and buys little for small models there.
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
            seed=seed,
            max_num_seqs=max_num_seqs,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            disable_log_stats=True,
        )
        engine = AsyncLLM.from_engine_args(args)
        return cls(engine, tokenizer, model=model_name or model_path, context_window=max_model_len)

    # -- tokens ---------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self._chat_ids(messages))

    def _chat_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        ids = self._tokenizer.apply_chat_template(
            [m.model_dump() for m in messages],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        return list(ids)

    # -- generation -----------------------------------------------------------------------
    def _sampling_params(self, request: GenerationRequest, prompt_len: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        room = self.context_window - prompt_len
        if room <= 0:
            raise ValueError(
                f"messages: the prompt has {prompt_len} tokens; the local model's context is "
                f"{self.context_window}"
            )
        structured = (
            StructuredOutputsParams(json=request.json_schema, disable_any_whitespace=True)
            if request.json_schema
            else None
        )
        return SamplingParams(
            max_tokens=min(request.max_tokens, room),
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=list(request.stop) or None,
            structured_outputs=structured,
        )

    async def _run(self, prompt_ids: list[int], params: Any) -> Any:
        from vllm.inputs import TokensPrompt

        final = None
        request_id = uuid.uuid4().hex
        try:
            async for output in self._engine.generate(
                TokensPrompt(prompt_token_ids=prompt_ids), params, request_id
            ):
                final = output
        except asyncio.CancelledError:
            await self._engine.abort(request_id)
            raise
        except Exception as exc:  # vLLM surfaces engine faults as assorted exception types
            raise EngineError(f"local engine failed: {exc}") from exc
        if final is None:
            raise EngineError("local engine returned no output")
        return final

    async def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        prompt_ids = self._chat_ids(request.messages)
        output = await self._run(prompt_ids, self._sampling_params(request, len(prompt_ids)))
        completion = output.outputs[0]
        cached = int(getattr(output, "num_cached_tokens", 0) or 0)
        return GenerationResult(
            text=completion.text,
            finish_reason=_FINISH_REASONS.get(completion.finish_reason or "stop", "stop"),  # type: ignore[arg-type]
            usage=Usage(
                prompt_tokens=len(prompt_ids),
                completion_tokens=len(completion.token_ids),
                cached_prompt_tokens=min(cached, len(prompt_ids)),
            ),
            model=self.model,
        )

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self._check_open()
        # All requests are submitted at once; vLLM's scheduler batches them. The first failure
        # aborts the others.
        return await gather_in_order([self._generate_one(r) for r in requests], len(requests) or 1)

    async def generate_settled(
        self, requests: Sequence[GenerationRequest]
    ) -> list[GenerationResult | EngineError | ValueError]:
        self._check_open()
        return await gather_settled([self._generate_one(r) for r in requests])

    # -- scoring --------------------------------------------------------------------------
    async def score(self, prefix: str, continuations: Sequence[str]) -> list[float]:
        self._check_open()
        validate_continuations(continuations)
        from vllm import SamplingParams

        prefix_ids = self._tokenizer.encode(prefix, add_special_tokens=False)
        if not prefix_ids:
            raise ValueError("prefix: empty prefix gives the first token nothing to condition on")
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)

        async def one(continuation: str) -> float:
            ids = self._tokenizer.encode(continuation, add_special_tokens=False)
            prompt = prefix_ids + ids
            if len(prompt) >= self.context_window:
                raise ValueError(
                    f"prefix: prefix and continuation take {len(prompt)} tokens; the context is "
                    f"{self.context_window}"
                )
            output = await self._run(prompt, params)
            logprobs = output.prompt_logprobs
            return float(
                sum(
                    logprobs[pos][tok].logprob
                    for pos, tok in enumerate(prompt)
                    if pos >= len(prefix_ids)
                )
            )

        return list(await asyncio.gather(*(one(c) for c in continuations)))

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("local engine is closed")

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._engine.shutdown()
            # AsyncLLM.__del__ calls shutdown() again, at interpreter exit where it raises from
            # half-torn-down modules; the engine is already down, so make that call a no-op.
            self._engine.shutdown = _already_shut_down
            if self.child_guard is not None:
                self.child_guard.close()
