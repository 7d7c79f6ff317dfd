"""The evaluation harness: run protocols over a dataset and measure accuracy against cost.

Dataset rows (JSON lines): ``{"id", "question", "answer": str | [str], "documents":
[{"path": "a.pdf"} | {"text": "..."}], "metadata"?}``; paths are relative to the dataset file.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from analysis.answer_scoring import score_answer
from analysis.engine_scorer import EngineScorer
from analysis.scorer_base import Scorer
from analysis.task_mi import (
    MILimits,
    MISkipped,
    RollingReferences,
    score_task_mi,
    task_mi_inputs,
)
from engines.base import Engine, GenerationRequest
from engines.prices import PriceTable
from protocols import Document, Options, Result, Task, build_protocol, protocol_class
from protocols.documents import load_document

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, str], None]


class DocumentRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> DocumentRef:
        if (self.path is None) == (self.text is None):
            raise ValueError("give exactly one of path or text")
        return self


class DatasetRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    answer: str | list[str]
    documents: list[DocumentRef] = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def references(self) -> list[str]:
        return [self.answer] if isinstance(self.answer, str) else list(self.answer)


def load_dataset(path: Path, limit: int | None = None) -> list[DatasetRow]:
    """Rows of a JSONL dataset; a bad line is an error naming its line number and field."""
    rows: list[DatasetRow] = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"dataset: cannot read {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(DatasetRow.model_validate_json(line))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "row"
            raise ValueError(f"dataset line {number}: {where}: {first['msg']}") from None
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise ValueError(f"dataset: {path} has no rows")
    return rows


def row_to_task(row: DatasetRow, base_dir: Path, options: Options | None = None) -> Task:
    documents: list[Document] = []
    for index, ref in enumerate(row.documents):
        field = f"documents[{index}]"
        if ref.path is not None:
            documents.append(load_document(base_dir / ref.path, field=field))
        else:
            documents.append(Document(name=f"{row.id}-{index}", text=ref.text))
    return Task(
        question=row.question,
        documents=tuple(documents),
        metadata={k: v for k, v in row.metadata.items() if isinstance(v, str | int | float | bool)},
        options=options or Options(),
    )


class TaskOutcome(BaseModel):
    id: str
    protocol: str
    answer: str | None
    correct: bool
    exact_match: bool
    f1: float
    numeric_match: bool
    judge_correct: bool | None = None
    remote_prompt_tokens: int = 0
    remote_completion_tokens: int = 0
    local_tokens: int = 0
    remote_cost_usd: float = 0.0
    latency_s: float = 0.0
    error: str | None = None
    # Mutual information of what crossed to the remote (minion/minions; see task_mi).
    mi_status: str | None = None  # succeeded, skipped, unsupported, error; None: not scored
    mi_error: str | None = None
    mi_nats: float | None = None
    mi_bits: float | None = None
    bits_per_token: float | None = None
    mi_n_contexts: int | None = None
    mi_compression_tokens: float | None = None


class ProtocolSummary(BaseModel):
    protocol: str
    tasks: int
    errors: int
    accuracy: float
    accuracy_ci95: tuple[float, float]
    f1: float
    judge_accuracy: float | None
    remote_prompt_tokens: int
    remote_completion_tokens: int
    local_tokens: int
    remote_cost_usd: float
    latency_p50_s: float
    latency_p95_s: float
    mi_tasks: int = Field(default=0, description="tasks with a mutual-information estimate")
    mi_bits: float | None = Field(default=None, description="mean raw I(X;Z) per task, bits")
    bits_per_token: float | None = Field(
        default=None, description="mean mi_bits / mean compression tokens (a ratio of means)"
    )


class BenchReport(BaseModel):
    dataset: str
    protocols: list[str]
    remote_model: str
    local_model: str
    remote_stand_in: bool
    summaries: list[ProtocolSummary]
    outcomes: list[TaskOutcome]


def bootstrap_ci(values: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean."""
    if not values:
        return (0.0, 0.0)
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def summarize(protocol: str, outcomes: list[TaskOutcome]) -> ProtocolSummary:
    correct = [float(o.correct) for o in outcomes]
    judged = [float(o.judge_correct) for o in outcomes if o.judge_correct is not None]
    latencies = [o.latency_s for o in outcomes if o.error is None] or [0.0]
    scored = [o for o in outcomes if o.mi_bits is not None and o.mi_compression_tokens]
    mi_bits = float(np.mean([o.mi_bits for o in scored])) if scored else None
    tokens = float(np.mean([o.mi_compression_tokens for o in scored])) if scored else None
    return ProtocolSummary(
        protocol=protocol,
        tasks=len(outcomes),
        errors=sum(o.error is not None for o in outcomes),
        accuracy=float(np.mean(correct)) if correct else 0.0,
        accuracy_ci95=bootstrap_ci(correct),
        f1=float(np.mean([o.f1 for o in outcomes])) if outcomes else 0.0,
        judge_accuracy=float(np.mean(judged)) if judged else None,
        remote_prompt_tokens=sum(o.remote_prompt_tokens for o in outcomes),
        remote_completion_tokens=sum(o.remote_completion_tokens for o in outcomes),
        local_tokens=sum(o.local_tokens for o in outcomes),
        remote_cost_usd=sum(o.remote_cost_usd for o in outcomes),
        latency_p50_s=float(np.percentile(latencies, 50)),
        latency_p95_s=float(np.percentile(latencies, 95)),
        mi_tasks=len(scored),
        mi_bits=mi_bits,
        bits_per_token=None if mi_bits is None or not tokens else mi_bits / tokens,
    )


JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"correct": {"type": "boolean"}},
    "required": ["correct"],
    "additionalProperties": False,
}


async def judge_answer(
    judge: Engine, question: str, answer: str, references: list[str]
) -> bool | None:
    """Ask the judge model whether ``answer`` matches a reference; None when it cannot say."""
    prompt = (
        f"Question: {question}\nReference answer(s): {' | '.join(references)}\n"
        f"Candidate answer: {answer}\n"
        "Does the candidate state the same answer as a reference? "
        'Reply as JSON {"correct": true|false}.'
    )
    result = await judge.generate_one(
        GenerationRequest.from_prompt(prompt, max_tokens=16, json_schema=JUDGE_SCHEMA)
    )
    try:
        verdict = json.loads(result.text).get("correct")
    except (json.JSONDecodeError, AttributeError):
        return None
    return verdict if isinstance(verdict, bool) else None


async def evaluate(
    dataset: Path,
    protocols: list[str],
    *,
    local: Engine,
    remote: Engine,
    prices: PriceTable,
    remote_stand_in: bool,
    limit: int | None = None,
    options: Options | None = None,
    judge: Engine | None = None,
    progress: ProgressCallback | None = None,
    mi: bool = True,
    mi_limits: MILimits | None = None,
    finished: Sequence[TaskOutcome] = (),
    on_outcome: Callable[[TaskOutcome], None] | None = None,
) -> BenchReport:
    """Run every protocol on every row (sequentially, so latencies are comparable). With
    ``mi``, each minion/minions run's compressions are scored with the local engine (when it
    can score) against its chunks and a rolling reference set, as the gateway does; each
    protocol starts with an empty reference set, so all see the same sequence of rows.

    ``finished`` outcomes (from an earlier, interrupted run) are kept and their rows not run
    again; ``on_outcome`` sees each new outcome as soon as it is known (to write it down). The
    summaries are computed from all outcomes, old and new."""
    rows = load_dataset(dataset, limit)
    tasks = [row_to_task(row, dataset.parent, options) for row in rows]
    wanted = {(name, row.id) for name in protocols for row in rows}
    outcomes = [o for o in finished if (o.protocol, o.id) in wanted]
    skip = {(o.protocol, o.id) for o in outcomes}
    row_order = {row.id: index for index, row in enumerate(rows)}
    total, done = len(rows) * len(protocols), len(skip)
    limits = mi_limits or MILimits()
    scorer = EngineScorer(local) if mi and local.supports_score else None
    for name in protocols:
        runner = build_protocol(name, local, remote, prices, remote_stand_in=remote_stand_in)
        measure = (
            MIMeasure(scorer, local, limits, RollingReferences(limits.reference_size))
            if mi and protocol_class(name).sends_compressions
            else None
        )
        for row, task in zip(rows, tasks, strict=True):
            if (name, row.id) in skip:
                continue
            outcome = await _run_one(runner, name, row, task, judge, measure)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
            done += 1
            if progress is not None:
                progress(done, total, f"{name} {row.id}")
    return BenchReport(
        dataset=str(dataset),
        protocols=protocols,
        remote_model=remote.model,
        local_model=local.model,
        remote_stand_in=remote_stand_in,
        summaries=[summarize(p, [o for o in outcomes if o.protocol == p]) for p in protocols],
        outcomes=sorted(outcomes, key=lambda o: (protocols.index(o.protocol), row_order[o.id])),
    )


class MIMeasure:
    """Mutual information of one protocol's runs, row after row (``analysis.task_mi``)."""

    def __init__(
        self, scorer: Scorer | None, local: Engine, limits: MILimits, references: RollingReferences
    ) -> None:
        self.scorer = scorer  # None: the local engine cannot score
        self.local = local
        self.limits = limits
        self.references = references

    async def fields(self, result: Result, task: Task) -> dict[str, Any]:
        """The ``mi_*`` fields of a TaskOutcome; failures become a status, never an error."""
        if self.scorer is None:
            return {"mi_status": "unsupported", "mi_error": "the local engine cannot score"}
        try:
            inputs = task_mi_inputs(result, task, self.local.count_tokens, self.limits)
        except MISkipped as skipped:
            return {"mi_status": "skipped", "mi_error": str(skipped)}
        except ValueError as exc:
            return {"mi_status": "error", "mi_error": str(exc)}
        try:
            score = await score_task_mi(self.scorer, inputs, self.references.recent(), self.limits)
        except MISkipped as skipped:
            return {"mi_status": "skipped", "mi_error": str(skipped)}
        except Exception as exc:  # a failed estimate must not end the benchmark
            logger.warning("mutual information failed: %s", exc)
            return {"mi_status": "error", "mi_error": f"{type(exc).__name__}: {exc}"}
        finally:
            self.references.push(inputs.contexts)
        estimate = score.estimate
        return {
            "mi_status": "succeeded",
            "mi_nats": estimate.mi_nats,
            "mi_bits": estimate.mi_bits,
            "bits_per_token": estimate.bits_per_token,
            "mi_n_contexts": estimate.n_contexts,
            "mi_compression_tokens": estimate.mean_compression_tokens,
        }


async def _run_one(
    runner: Any,
    name: str,
    row: DatasetRow,
    task: Task,
    judge: Engine | None,
    measure: MIMeasure | None = None,
) -> TaskOutcome:
    started = time.perf_counter()
    try:
        result = await runner.run(task)
    except Exception as exc:  # one failed task must not end the benchmark; it counts as wrong
        logger.warning("%s failed on %s: %s", name, row.id, exc)
        return TaskOutcome(
            id=row.id, protocol=name, answer=None, correct=False, exact_match=False, f1=0.0,
            numeric_match=False, latency_s=time.perf_counter() - started, error=str(exc),
        )  # fmt: skip
    if result.error is not None:  # the protocol failed but reported what it spent
        logger.warning("%s failed on %s: %s", name, row.id, result.error)
        return TaskOutcome(
            id=row.id, protocol=name, answer=None, correct=False, exact_match=False, f1=0.0,
            numeric_match=False, latency_s=time.perf_counter() - started, error=result.error,
        )  # fmt: skip
    score = score_answer(result.answer, row.references)
    verdict = (
        await judge_answer(judge, row.question, result.answer, row.references) if judge else None
    )
    latency = time.perf_counter() - started  # scoring the compressions is not part of it
    mi_fields = await measure.fields(result, task) if measure is not None else {}
    return TaskOutcome(
        id=row.id,
        protocol=name,
        answer=result.answer,
        correct=score.correct,
        exact_match=score.exact_match,
        f1=score.f1,
        numeric_match=score.numeric_match,
        judge_correct=verdict,
        remote_prompt_tokens=result.usage.remote.prompt_tokens,
        remote_completion_tokens=result.usage.remote.completion_tokens,
        local_tokens=result.usage.local.total_tokens,
        remote_cost_usd=result.cost_usd.remote,
        latency_s=latency,
        **mi_fields,
    )


def plot_accuracy_vs_cost(report: BenchReport, path: Path) -> Path:
    """Accuracy (with its 95% interval) against remote cost (or remote tokens when unpriced)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    priced = any(s.remote_cost_usd > 0 for s in report.summaries)
    fig, ax = plt.subplots(figsize=(6, 4))
    for summary in report.summaries:
        x = (
            summary.remote_cost_usd
            if priced
            else summary.remote_prompt_tokens + summary.remote_completion_tokens
        )
        low, high = summary.accuracy_ci95
        ax.errorbar(
            [x], [summary.accuracy], yerr=[[summary.accuracy - low], [high - summary.accuracy]],
            fmt="o", capsize=4, label=summary.protocol,
        )  # fmt: skip
    ax.set_xlabel("remote cost (USD)" if priced else "remote tokens")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"accuracy vs remote cost ({report.remote_model})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
