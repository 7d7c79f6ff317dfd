"""I(X; Z) of one protocol run: what crossed from the local model to the remote, which context
each of those texts was written from, and the estimate over them plus reference contexts.

One code path for the gateway's background job (``service/mi_background.py``) and the
evaluation harness (``analysis/evaluate.py``). See docs/mutual_information.md, "Per task".

* **Compressions.** What the protocol recorded as crossed (``RoundRecord.crossed``): each text
  as sent, the chunk it was written from (none: the task's documents as one text) and the query
  it answered. The protocol decides what crossed (``minions``: the findings that fit the
  remote's window; ``minion``: the local replies); nothing here depends on which protocol ran.
* **Contexts.** The chunks the protocol read, rebuilt by ``protocols.base.run_chunks`` with the
  run's own chunking (``Result.stats``); their count must match the run's. Sources of the
  scored compressions first, then the other chunks, up to ``max_contexts``; then up to
  ``reference_size`` reference contexts (other tasks' recent chunks).
* **Bounds.** At most ``max_compressions`` compressions (in run order) and ``max_contexts`` of
  the task's contexts; every context is first cut to ``max_context_chars`` characters by the
  estimator's own rule (first and last halves kept), then to the scorer's token budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from analysis.mutual_information import Compression, MIEstimate, estimate_mutual_information
from analysis.scorer_base import Scorer
from analysis.scoring_template import truncate_middle
from protocols import protocol_class
from protocols.base import run_chunks
from protocols.result import Result
from protocols.task import Task


class MISkipped(Exception):
    """Nothing to estimate (no compression crossed, or fewer than two contexts)."""


@dataclass(frozen=True, slots=True)
class MILimits:
    """How much one estimate may score (``reference_size`` is N of the rolling reference)."""

    max_contexts: int = 16
    max_compressions: int = 16
    reference_size: int = 16
    max_context_chars: int = 12_000

    def __post_init__(self) -> None:
        for name in ("max_contexts", "max_compressions", "max_context_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if self.reference_size < 0:
            raise ValueError("reference_size: must be at least 0")


@dataclass(frozen=True, slots=True)
class TaskMIInputs:
    """The task's own contexts (sources first) and the compressions, indexing into them."""

    question: str
    contexts: list[str]
    compressions: list[Compression]


@dataclass(frozen=True, slots=True)
class TaskMIScore:
    estimate: MIEstimate
    task_contexts: int
    reference_contexts: int

    def fields(self) -> dict[str, Any]:
        """The numbers a task record and a benchmark row keep (no text of any context)."""
        e = self.estimate
        return {
            "mi_nats": e.mi_nats,
            "mi_bits": e.mi_bits,
            "bits_per_token": e.bits_per_token,
            "mi_bits_display": e.mi_bits_display,
            "bits_per_token_display": e.bits_per_token_display,
            "upper_bound_nats": e.upper_bound_nats,
            "standard_error_nats": e.standard_error_nats,
            "n_contexts": e.n_contexts,
            "n_task_contexts": self.task_contexts,
            "n_reference_contexts": self.reference_contexts,
            "n_compressions": e.n_compressions,
            "mean_compression_tokens": e.mean_compression_tokens,
            "scorer_model": e.scorer_model,
            "scorer": e.scorer.label,
            "reference_set_id": e.reference_set_id,
            "negative_query": e.negative_query,
            "context_token_budget": e.context_token_budget,
            "truncated_contexts": e.truncated_contexts,
        }


def clip_context(text: str, max_chars: int) -> str:
    """The estimator's truncation rule in characters: keep the first and last halves."""
    return "".join(truncate_middle(text, max_chars)) if len(text) > max_chars else text


def task_mi_inputs(
    result: Result,
    task: Task,
    count_tokens: Callable[[str], int],
    limits: MILimits,
) -> TaskMIInputs:
    """Contexts and compressions of one ``minion``/``minions`` run. ``count_tokens`` must be the
    local engine's (the run chunked with it); ``options`` are the run's (default: the task's).
    CPU-heavy for long documents (it re-chunks them): call it off the event loop. Raises
    ``MISkipped`` when nothing crossed, ``ValueError`` when the chunks cannot be rebuilt."""
    if not protocol_class(result.protocol).sends_compressions:
        raise ValueError(f"protocol: {result.protocol!r} sends no compressions to the remote")
    crossed = [item for record in result.rounds for item in record.crossed if item.text.strip()]
    if not crossed:
        raise MISkipped("no local output crossed to the remote")
    chunks = run_chunks(result.stats, task.documents, count_tokens)
    whole = "\n\n".join(document.text for document in task.documents)
    contexts: list[str] = []
    index_of: dict[str, int] = {}

    def add(text: str) -> int | None:
        text = clip_context(text, limits.max_context_chars)
        if not text.strip():
            return None
        if text not in index_of:  # identical chunks are one context (the estimator needs it)
            if len(contexts) >= limits.max_contexts:
                return None
            index_of[text] = len(contexts)
            contexts.append(text)
        return index_of[text]

    compressions: list[Compression] = []
    for item in crossed:
        if len(compressions) >= limits.max_compressions:
            break
        if item.chunk_id is None:
            source = whole
        elif 0 <= item.chunk_id < len(chunks):
            source = chunks[item.chunk_id].text
        else:
            raise ValueError(f"chunk_id: {item.chunk_id} is not one of the {len(chunks)} chunks")
        index = add(source)
        if index is not None:
            compressions.append(Compression(context=index, text=item.text, query=item.query))
    for chunk in chunks:  # the task's other chunks are the first negatives
        if len(contexts) >= limits.max_contexts:
            break
        add(chunk.text)
    if not compressions:
        raise MISkipped("no compression had a context to score against")
    return TaskMIInputs(task.question, contexts, compressions)


async def score_task_mi(
    scorer: Scorer,
    inputs: TaskMIInputs,
    references: Sequence[str],
    limits: MILimits,
) -> TaskMIScore:
    """The estimate over the task's contexts plus up to ``reference_size`` of ``references``
    (recent contexts of other tasks; those equal to one of the task's are left out). Every
    compression is scored with its own query against every context (the default mode)."""
    own = set(inputs.contexts)
    extra: list[str] = []
    for text in references:
        if len(extra) >= limits.reference_size:
            break
        text = clip_context(text, limits.max_context_chars)
        if text.strip() and text not in own:
            own.add(text)
            extra.append(text)
    contexts = [*inputs.contexts, *extra]
    if len(contexts) < 2:
        raise MISkipped("fewer than 2 contexts (one chunk and no reference contexts yet)")
    estimate = await estimate_mutual_information(
        scorer,
        contexts,
        inputs.compressions,
        queries=inputs.question,
        # Rolling: the id names the policy, not the texts (they change with every task).
        reference_set=f"rolling:{limits.reference_size}",
    )
    return TaskMIScore(estimate, len(inputs.contexts), len(extra))


def contexts_to_share(contexts: Sequence[str], reference_size: int) -> list[str]:
    """Which of a task's contexts join the rolling reference set: at most a quarter of it
    (at least one), evenly spaced, so the set spans several recent tasks."""
    if reference_size < 1 or not contexts:
        return []
    count = min(len(contexts), max(1, reference_size // 4))
    step = len(contexts) / count
    return [contexts[int(i * step)] for i in range(count)]


class RollingReferences:
    """The rolling reference set in memory (the harness; the gateway keeps it in Redis):
    newest first, at most ``size`` contexts."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: list[str] = []

    def recent(self) -> list[str]:
        return list(self._items)

    def push(self, contexts: Sequence[str]) -> None:
        self._items = [*reversed(contexts_to_share(contexts, self.size)), *self._items][: self.size]
