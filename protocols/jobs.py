"""MinionS jobs: from a validated plan to local requests, from local replies to findings.

A job is one (task, chunk, sample). Everything a job can go wrong with (truncated, unparseable,
no answer, engine failure, prompt too long) ends as a counted drop reason, never an exception.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from engines.base import Engine, GenerationRequest, GenerationResult
from engines.errors import EngineTimeoutError
from protocols import prompts
from protocols.base import CHAT_TEMPLATE_MARGIN, chunk_source, neutralize
from protocols.chunking import Chunk
from protocols.findings import Finding
from protocols.plans import QUOTE_CHARS, JobOutput, JobPlan, KeywordSelection, job_output_schema
from protocols.result import Crossing, JobCounts, LocalOutput
from protocols.retrieval import ChunkRetriever
from protocols.structured import parse_reply
from protocols.task import Options

# Finding fields are clipped to this many characters before they cross to the remote.
_FIELD_CHARS = 400


@dataclass(frozen=True, slots=True)
class Job:
    task_index: int
    chunk_id: int
    sample: int


@dataclass
class JobBatch:
    """The jobs of one round and their requests (same order), plus what did not make it."""

    jobs: list[Job] = field(default_factory=list)
    requests: list[GenerationRequest] = field(default_factory=list)
    counts: JobCounts = field(default_factory=lambda: JobCounts(planned=0))
    warnings: list[str] = field(default_factory=list)


def select_chunks(
    plan: JobPlan, chunks: Sequence[Chunk], retriever: Callable[[], ChunkRetriever]
) -> tuple[list[list[int]], list[str]]:
    """Chunk ids for each planned task. ``retriever`` builds the BM25 index on first need."""
    selected: list[list[int]] = []
    warnings: list[str] = []
    for index, planned in enumerate(plan.tasks):
        selection = planned.chunks
        if selection == "all":
            selected.append([chunk.id for chunk in chunks])
        elif isinstance(selection, KeywordSelection):
            ids = retriever().top_k(selection.keywords, selection.top_k)
            if not ids:
                warnings.append(
                    f"task {index + 1}: no chunk contains any of the keywords "
                    f"{selection.keywords}; the task ran over all chunks"
                )
                ids = [chunk.id for chunk in chunks]
            selected.append(ids)
        else:
            selected.append(list(selection))
    return selected, warnings


def build_jobs(
    plan: JobPlan,
    chunks: Sequence[Chunk],
    selected: list[list[int]],
    options: Options,
    local: Engine,
    retriever: Callable[[], ChunkRetriever] | None = None,
    reply_tokens: int | None = None,
) -> JobBatch:
    """The round's jobs and requests. When the plan asks for more than the round's budget
    (``max_jobs_per_round``, ``max_local_tokens_per_round``), each task's chunks are taken most
    relevant first (BM25 against the task's text) and the tasks take turns, so every task keeps
    its best chunks. Each job may write ``reply_tokens`` (default: ``job_max_tokens``)."""
    batch = JobBatch()
    reply_tokens = reply_tokens or options.job_max_tokens
    planned = sum(len(ids) for ids in selected) * options.samples_per_job
    over_budget = planned > options.max_jobs_per_round or options.max_local_tokens_per_round
    if over_budget and retriever is not None:
        selected = [
            retriever().rank(f"{task.task} {task.advice}", ids)
            for task, ids in zip(plan.tasks, selected, strict=True)
        ]
    per_task = [
        [
            Job(task_index, chunk_id, sample)
            for chunk_id in ids
            for sample in range(options.samples_per_job)
        ]
        for task_index, ids in enumerate(selected)
    ]
    # Round-robin across tasks so that, when the budget bites, every task still gets its share.
    interleaved = [job for group in itertools.zip_longest(*per_task) for job in group if job]
    if options.samples_per_job > 1 and options.temperature == 0:
        batch.warnings.append("samples_per_job > 1 at temperature 0 repeats identical samples")
    schema = job_output_schema(reply_tokens) if local.supports_json_schema else None
    budget = local.context_window - options.job_max_tokens - CHAT_TEMPLATE_MARGIN
    frame_tokens: dict[tuple[int, int], int] = {}
    too_long = 0
    tokens_left = options.max_local_tokens_per_round
    chosen: list[tuple[Job, GenerationRequest]] = []
    considered = 0
    for job in interleaved:
        if len(chosen) >= options.max_jobs_per_round:
            break
        chunk = chunks[job.chunk_id]
        planned_task = plan.tasks[job.task_index]
        values = {
            "source": chunk_source(chunk),
            "task": planned_task.task,
            "advice": f"Advice: {planned_task.advice}" if planned_task.advice.strip() else "",
        }
        key = (job.task_index, chunk.document_index)
        if key not in frame_tokens:
            frame_tokens[key] = local.count_tokens(
                prompts.render("minions_job", chunk="", **values)
            )
        job_tokens = frame_tokens[key] + chunk.tokens
        if job_tokens > budget:
            considered += 1
            too_long += 1
            continue
        cost = job_tokens + reply_tokens
        if tokens_left is not None and cost > tokens_left:
            break
        considered += 1
        if tokens_left is not None:
            tokens_left -= cost
        chosen.append(
            (
                job,
                GenerationRequest.from_prompt(
                    prompts.render("minions_job", chunk=neutralize(chunk.text), **values),
                    max_tokens=reply_tokens,
                    temperature=options.temperature,
                    seed=options.seed + job.sample,
                    json_schema=schema,
                ),
            )
        )
    counts = JobCounts(planned=planned, skipped=planned - considered)
    if counts.skipped:
        limits = f"max_jobs_per_round ({options.max_jobs_per_round})"
        if options.max_local_tokens_per_round is not None:
            limits += f" or max_local_tokens_per_round ({options.max_local_tokens_per_round})"
        batch.warnings.append(
            f"{counts.skipped} of {planned} jobs skipped: over {limits}; each task kept its "
            "chunks most relevant to it"
        )
    chosen.sort(key=lambda pair: (pair[0].task_index, pair[0].chunk_id, pair[0].sample))
    batch.jobs = [job for job, _ in chosen]
    batch.requests = [request for _, request in chosen]
    if too_long:
        counts.dropped["too_long"] = too_long
        batch.warnings.append(f"{too_long} jobs dropped: prompt longer than the local context")
    batch.counts = counts
    return batch


def judge(
    job: Job, result: GenerationResult | Exception | None
) -> tuple[LocalOutput | None, str | None]:
    """A job's kept output, or the reason it was dropped (``timeout`` when the local engine timed
    out on it, ``engine_error`` for any other failure)."""
    if isinstance(result, EngineTimeoutError):
        return None, "timeout"
    if isinstance(result, Exception) or result is None:
        return None, "engine_error"
    if result.finish_reason in ("abort", "error"):
        return None, "engine_error"
    if result.finish_reason == "length":
        return None, "truncated"
    try:
        output = parse_reply(result.text, JobOutput)
    except ValueError:
        return None, "unparseable"
    if not output.has_answer:
        return None, "no_answer"
    return (
        LocalOutput(
            task_index=job.task_index,
            chunk_id=job.chunk_id,
            sample=job.sample,
            answer=output.answer,
            explanation=output.explanation,
            citation=output.citation,
        ),
        None,
    )


def findings_lines(
    plan: JobPlan, findings: Sequence[Finding], chunks: Sequence[Chunk]
) -> list[str]:
    """The plan's tasks (one line each), then the findings in the order given, each with its
    task and where it was found (one chunk: its source; several: their ids)."""
    lines = [f"Task {index + 1}: {_clip(planned.task)}" for index, planned in enumerate(plan.tasks)]
    if not findings:
        lines.append("- no assistant found anything")
    for finding in findings:
        chunk_ids = finding.chunk_ids
        if len(chunk_ids) == 1:
            where = chunk_source(chunks[chunk_ids[0]])
        else:  # the same finding from several chunks: ids only, the remote knows the layout
            where = "chunks " + ", ".join(str(chunk_id) for chunk_id in chunk_ids[:10])
            if len(chunk_ids) > 10:
                where += f" and {len(chunk_ids) - 10} more"
        lines.append(f"- [task {finding.task_index + 1}; {where}] " + finding_text(finding.output))
    return lines


def crossings(
    plan: JobPlan, outputs: Sequence[LocalOutput], sent: str, question: str
) -> list[Crossing]:
    """The kept outputs whose finding is in ``sent`` (what the remote received), each with the
    task it answered; outputs left out to fit the remote's window never crossed."""
    found = []
    for output in outputs:
        if output.chunk_id is None or not output.answer:
            continue
        text = finding_text(output)
        if text.strip() and text in sent:
            index = output.task_index
            query = question
            if index is not None and 0 <= index < len(plan.tasks):
                query = plan.tasks[index].task or question
            found.append(Crossing(chunk_id=output.chunk_id, text=text, query=query))
    return found


def finding_text(output: LocalOutput) -> str:
    """A kept output as it crosses to the remote (fields clipped), without its location: the
    text the local model wrote, which the mutual-information estimate scores."""
    parts = [f"answer: {_clip(output.answer or '')}"]
    if output.citation:
        parts.append(f'quote: "{_clip(output.citation, QUOTE_CHARS)}"')
    if output.explanation:
        parts.append(f"explanation: {_clip(output.explanation)}")
    return " | ".join(parts)


def fit_lines(
    lines: list[str], budget_tokens: int, count_tokens: Callable[[str], int], keep: int = 0
) -> tuple[str, int]:
    """The first ``keep`` lines, then as many more as fit ``budget_tokens`` in all, and how many
    were left out."""
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        tokens = count_tokens(line) + 1
        if index >= keep and used + tokens > budget_tokens:
            break
        kept.append(line)
        used += tokens
    left_out = len(lines) - len(kept)
    if left_out:
        kept.append(f"({left_out} more findings left out to fit the budget)")
    return "\n".join(kept), left_out


def _clip(text: str, limit: int = _FIELD_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
