"""What the four protocols share: construction, options, the run state, and building the Result."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast, get_args

from engines.base import Engine, GenerationRequest, GenerationResult
from engines.errors import EngineError
from engines.prices import PriceTable
from protocols import prompts
from protocols.accounting import Events, EventSink, Recorder
from protocols.baseline import Baseline, count_baseline
from protocols.chunking import Chunk, chunk_documents, fit_chunk_tokens
from protocols.cost_guard import CostGuard
from protocols.privacy.config import PrivacyConfig
from protocols.result import (
    CostReport,
    DocumentStats,
    ProtocolName,
    Result,
    RoundRecord,
    Timings,
    TokenCounts,
    UsageReport,
)
from protocols.task import ChunkingStrategy, Document, Options, Task

if TYPE_CHECKING:
    from protocols.privacy.pseudonymizer import Pseudonymizer

logger = logging.getLogger(__name__)

# Chat templates add role markers around every message; this covers them with room to spare.
CHAT_TEMPLATE_MARGIN = 64
# A token is rarely longer than this many characters, so longer texts cannot fit: it lets us skip
# tokenizing a huge document just to learn that it does not fit.
_MAX_CHARS_PER_TOKEN = 16


class ContextOverflowError(ValueError):
    """The prompt does not fit the engine's context window."""


class ProtocolFailed(Exception):
    """A protocol cannot go on (its local model failed where nothing can stand in for it): the
    run ends with a failed Result that keeps the usage spent so far."""


def summarize_errors(errors: list[EngineError | ValueError]) -> str:
    """Distinct error messages with their counts, the commonest first (at most three)."""
    counts: dict[str, int] = {}
    for error in errors:
        counts[str(error)] = counts.get(str(error), 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    text = "; ".join(f"{message} (x{n})" if n > 1 else message for message, n in ranked[:3])
    return text + (f"; and {len(ranked) - 3} other errors" if len(ranked) > 3 else "")


@dataclass
class RunState:
    """Everything one ``run`` accumulates on its way to a Result."""

    task: Task
    options: Options
    recorder: Recorder
    events: Events
    baseline: Baseline
    started: float = field(default_factory=time.perf_counter)
    rounds: list[RoundRecord] = field(default_factory=list)
    compressions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: DocumentStats | None = None
    privacy: Pseudonymizer | None = None

    @property
    def guard(self) -> CostGuard:
        return self.recorder.guard

    def warn(self, message: str) -> None:
        logger.warning("%s", message)
        self.warnings.append(message)

    def new_round(self, number: int) -> RoundRecord:
        record = RoundRecord(round=number)
        self.rounds.append(record)
        return record


class Protocol(ABC):
    """A protocol: constructed with engines, prices and config (``Options`` fields), it answers
    tasks with ``await protocol.run(task)``."""

    name: ClassVar[ProtocolName]
    # Whether ``Options.max_remote_fraction`` limits this protocol's remote prompt tokens; the
    # baselines are what the fraction is of, so they only record their spending.
    remote_budget: ClassVar[bool] = False
    # Whether the documents themselves go to the remote (remote_only): privacy mode says so.
    sends_documents: ClassVar[bool] = False
    # Whether the local side sends the remote compressions of the documents (what the mutual
    # information of a run is estimated over).
    sends_compressions: ClassVar[bool] = False
    # The option that bounds the answer's length (a chat request's ``max_tokens`` sets it), or
    # None when the answer comes out of a JSON decision.
    answer_limit_option: ClassVar[str | None] = None

    @classmethod
    @abstractmethod
    def max_remote_calls(cls, options: Options) -> int:
        """The most remote calls one run with ``options`` makes, retries included: the budget
        reserves this many worst-case calls before the task runs."""

    @classmethod
    def max_remote_prompt_tokens(
        cls, options: Options, baseline_tokens: int | None, context_window: int
    ) -> int:
        """The most remote prompt tokens one run sends, all calls together: each call's prompt
        at most the remote's context window, and for a protocol under the remote budget at most
        ``max_remote_fraction`` x ``baseline_tokens`` (remote_only's prompt tokens, or an upper
        bound of them; None when not counted)."""
        bound = cls.max_remote_calls(options) * context_window
        if cls.remote_budget and baseline_tokens is not None:
            bound = min(bound, math.floor(options.max_remote_fraction * baseline_tokens))
        return bound

    def __init__(
        self,
        local: Engine,
        remote: Engine,
        prices: PriceTable,
        *,
        remote_stand_in: bool | None = None,
        privacy_config: PrivacyConfig | None = None,
        privacy_crossed: Callable[[str], None] | None = None,
        **config: Any,
    ) -> None:
        self.local = local
        self.remote = remote
        self.prices = prices
        self.privacy_config = privacy_config
        self.privacy_crossed = privacy_crossed
        self.remote_stand_in = remote is local if remote_stand_in is None else remote_stand_in
        self.options = Options(**config)  # unknown or invalid config: ValueError naming the field

    async def run(self, task: Task, events: EventSink | None = None) -> Result:
        if not isinstance(task, Task):
            task = Task.model_validate(task)
        options = self.options.merged(task.options)
        privacy = await self._pseudonymizer(task, options)
        # Privacy mode's one seam: the remote, as every protocol reaches it (through the
        # Recorder), pseudonymizes what goes out and restores what comes back.
        remote = self.remote if privacy is None else _private(self.remote, privacy)
        # The baseline is counted before any remote call: it sets the remote budget.
        baseline = await asyncio.to_thread(
            task_baseline, task, self.remote, self.prices, options.remote_max_tokens
        )
        guard = CostGuard(
            baseline.remote_prompt_tokens,
            options.max_remote_fraction if self.remote_budget else None,
        )
        state = RunState(
            task=task,
            options=options,
            recorder=Recorder(self.local, remote, self.prices, Events(events), guard),
            events=Events(events),
            baseline=baseline,
            privacy=privacy,
        )
        state.stats = DocumentStats(documents=len(task.documents), pages=task.page_count)
        await state.events.emit(
            "baseline", {**baseline.model_dump(), "budget_prompt_tokens": guard.budget}
        )
        error: str | None = None
        try:
            answer = await self._run(state)
        except ProtocolFailed as failed:
            answer, error = "", str(failed)
            state.warn(f"the run failed: {error}")
        if guard.count_scale > 1:
            state.warn(
                f"the remote reported up to {guard.count_scale:.2f}x the prompt tokens counted "
                "for a call (its tokenizer differs from the one counting for it, or privacy "
                "placeholders took more tokens); later calls were counted that much higher"
            )
        result = self._result(state, answer, error)
        await state.events.emit(
            "final",
            {
                "answer": result.answer,
                "error": result.error,
                "usage": result.usage.model_dump(exclude={"remote_calls", "local_calls"}),
                "cost_usd": result.cost_usd.model_dump(),
                "warnings": result.warnings,
            },
        )
        return result

    async def _pseudonymizer(self, task: Task, options: Options) -> Pseudonymizer | None:
        if options.privacy != "pseudonymize":
            return None
        # Imported here: Presidio and spaCy take seconds to import and load, and most tasks
        # never need them. The detector is built once per process, off the event loop.
        from protocols.privacy.detector import shared_detector
        from protocols.privacy.pseudonymizer import Pseudonymizer

        detector = await asyncio.to_thread(shared_detector, self.privacy_config)
        pseudonymizer = Pseudonymizer(detector, self.privacy_crossed)
        for document in task.documents:
            await asyncio.to_thread(pseudonymizer.learn, document.text)
        if self.sends_documents:
            pseudonymizer.notes.append(
                f"{self.name}: the whole document was pseudonymized before it was sent to the "
                "remote"
            )
        return pseudonymizer

    @abstractmethod
    async def _run(self, state: RunState) -> str:
        """Run the protocol and return the answer; rounds and warnings go into ``state``."""

    # Helpers the protocols share.

    async def local_chunks(self, state: RunState, reserved_tokens: int) -> list[Chunk]:
        """The documents chunked so one chunk plus ``reserved_tokens`` fits the local context."""
        options = state.options
        size = fit_chunk_tokens(
            options.chunk_tokens,
            self.local.context_window,
            reserved_tokens + CHAT_TEMPLATE_MARGIN,
        )
        if size < options.chunk_tokens:
            state.warn(
                f"chunk_tokens lowered from {options.chunk_tokens} to {size} to fit the local "
                f"context window ({self.local.context_window} tokens)"
            )
        overlap = min(options.chunk_overlap, size // 2)
        # Tokenizing megabytes takes seconds: off the event loop, so a gateway keeps serving.
        chunks = await asyncio.to_thread(
            chunk_documents,
            state.task.documents,
            count_tokens=self.local.count_tokens,
            strategy=options.chunking,
            chunk_tokens=size,
            overlap_tokens=overlap,
        )
        state.stats = DocumentStats(
            documents=len(state.task.documents),
            pages=state.task.page_count,
            chunks=len(chunks),
            chunk_tokens=size,
            chunk_overlap=overlap,
            chunking=options.chunking,
        )
        return chunks

    async def local_batches(
        self, state: RunState, purpose: str, requests: list[GenerationRequest], *, round: int
    ) -> list[GenerationResult | EngineError | ValueError]:
        """Run local requests in batches of ``job_concurrency``, in order. A request the engine
        fails on yields its error in its place (the caller counts that job as dropped): one failed
        request fails only its job, and the others' results are kept."""
        outcomes: list[GenerationResult | EngineError | ValueError] = []
        size = state.options.job_concurrency
        for start in range(0, len(requests), size):
            batch = requests[start : start + size]
            settled = await state.recorder.generate_settled("local", purpose, batch, round=round)
            failures = [outcome for outcome in settled if isinstance(outcome, Exception)]
            if failures:
                state.warn(
                    f"round {round}: the local engine failed on {len(failures)} of {len(batch)} "
                    f"requests: {summarize_errors(failures)}"
                )
            outcomes.extend(settled)
            await state.events.emit(
                "jobs_progress", {"round": round, "done": len(outcomes), "total": len(requests)}
            )
        return outcomes

    @staticmethod
    def fits(engine: Engine, text: str, reply_tokens: int) -> bool:
        """Whether a prompt of ``text`` plus a reply of ``reply_tokens`` fits ``engine``."""
        budget = engine.context_window - reply_tokens - CHAT_TEMPLATE_MARGIN
        if len(text) > budget * _MAX_CHARS_PER_TOKEN:
            return False
        return engine.count_tokens(text) <= budget

    def _result(self, state: RunState, answer: str, error: str | None = None) -> Result:
        recorder = state.recorder
        remote_priced = self.prices.has_price(self.remote.model)
        remote_calls = recorder.records("remote")
        if self.remote_stand_in:
            state.warn(
                "remote_stand_in: no remote model is configured; the local model played the "
                "remote, so remote usage is counted but costs nothing"
            )
        elif remote_calls and not remote_priced:
            state.warn(
                f"remote model {self.remote.model!r} has no price in the price table; "
                "its cost is reported as 0"
            )
        renamed = sorted({call.reply_model for call in remote_calls if call.reply_model})
        if renamed and not self.remote_stand_in:
            state.warn(
                f"the remote's replies named model(s) {', '.join(renamed)} while "
                f"{self.remote.model!r} was asked for; each call is priced as the model asked for"
            )
        remote_cost = recorder.cost("remote")
        local_cost = recorder.cost("local")
        queue_wait_s, queue_wait_max_s = recorder.queue_wait("local")
        return Result(
            answer=answer.strip(),
            error=error,
            protocol=self.name,
            local_model=self.local.model,
            remote_model=self.remote.model,
            remote_stand_in=self.remote_stand_in,
            rounds=state.rounds,
            usage=UsageReport(
                local=TokenCounts.of(recorder.usage("local")),
                remote=TokenCounts.of(recorder.usage("remote")),
                local_requests=recorder.requests("local"),
                remote_requests=recorder.requests("remote"),
                remote_calls=remote_calls,
                local_calls=recorder.records("local"),
            ),
            cost_usd=CostReport(
                remote=remote_cost,
                local=local_cost,
                total=remote_cost + local_cost,
                remote_priced=remote_priced,
            ),
            timings=Timings(
                local_s=recorder.seconds("local"),
                remote_s=recorder.seconds("remote"),
                total_s=time.perf_counter() - state.started,
                local_queue_wait_s=queue_wait_s,
                local_queue_wait_max_s=queue_wait_max_s,
            ),
            compressions=state.compressions,
            warnings=state.warnings,
            stats=state.stats or DocumentStats(documents=0, pages=0),
            baseline=state.baseline.with_savings(
                remote_cost + local_cost, remote_priced and not self.remote_stand_in
            ),
            cost_guard=state.guard.record(),
            privacy=state.privacy.report() if state.privacy else None,
        )


def task_baseline(task: Task, remote: Engine, prices: PriceTable, reply_tokens: int) -> Baseline:
    """What ``remote_only`` would send for ``task`` (counted, not run): the remote budget's
    denominator, counted the same way at admission and in the run."""
    return count_baseline(remote_only_prompt(task), remote, prices, reply_tokens=reply_tokens)


def remote_only_prompt(task: Task) -> str:
    """What remote_only sends: the question and every document, in one message."""
    return prompts.render(
        "remote_only_answer",
        question=task.question,
        metadata=render_metadata(task.metadata, task.documents),
        documents=render_documents(task.documents),
    )


def run_chunks(
    stats: DocumentStats, documents: Sequence[Document], count_tokens: Callable[[str], int]
) -> list[Chunk]:
    """The chunks a run read, rebuilt from its documents with the run's own chunking (``stats``)
    and the local engine's ``count_tokens``; ValueError when they cannot be (other documents,
    tokenizer or chunking). CPU-heavy for long documents: call it off the event loop."""
    if stats.chunks == 0:
        return []
    if stats.chunking not in get_args(ChunkingStrategy) or stats.chunk_tokens < 1:
        raise ValueError(f"stats: the run's chunking ({stats.chunking!r}) cannot be rebuilt")
    chunks = chunk_documents(
        documents,
        count_tokens=count_tokens,
        strategy=cast("ChunkingStrategy", stats.chunking),
        chunk_tokens=stats.chunk_tokens,
        overlap_tokens=stats.chunk_overlap,
    )
    if len(chunks) != stats.chunks:
        raise ValueError(
            f"chunks: rebuilt {len(chunks)} chunks but the run had {stats.chunks} (different "
            "documents, tokenizer or chunking options)"
        )
    return chunks


def _private(remote: Engine, pseudonymizer: Pseudonymizer) -> Engine:
    from protocols.privacy.engine import PrivateEngine

    return PrivateEngine(remote, pseudonymizer)


def render_documents(documents: tuple[Document, ...] | list[Document]) -> str:
    return "\n\n".join(
        f'<document name="{_attribute(document.name)}">\n{neutralize(document.text)}\n</document>'
        for document in documents
    )


def render_metadata(metadata: dict[str, Any], documents: tuple[Document, ...] = ()) -> str:
    """Task and document metadata as one compact line, or "" when there is none."""
    merged: dict[str, Any] = dict(metadata)
    for document in documents:
        if document.metadata:
            merged[f"document {document.name}"] = document.metadata
    return f"Metadata: {json.dumps(merged, ensure_ascii=False)}" if merged else ""


def chunk_source(chunk: Chunk) -> str:
    return f"{_attribute(chunk.document_name)}, chunk {chunk.id}, {chunk.pages_label}"


def _attribute(text: str) -> str:
    return text.replace('"', "'").replace("\n", " ")


def neutralize(text: str) -> str:
    # A document must not be able to close its own delimiter and pose as the prompt around it.
    return text.replace("</document>", "</ document>").replace("</excerpt>", "</ excerpt>")
