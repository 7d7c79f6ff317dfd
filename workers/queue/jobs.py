"""What travels through the job queue: a job, its outcome, the errors, and the time limits.

A job is one stream entry with one field, ``job``, holding the job as JSON (``Job.fields``: one
field parses much faster than many); its outcome is one JSON string, stored under the job id and
sent to the caller's reply stream.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from engines.base import GenerationRequest, GenerationResult
from engines.errors import EngineCapabilityError, EngineError
from engines.usage import Usage

JobKind = Literal["generate", "score"]
# invalid / capability / failed: the engine refused the job for good (no retry);
# dead_letter: it was delivered ``max_deliveries`` times and never answered.
FailureKind = Literal["invalid", "capability", "failed", "dead_letter"]


class NoLiveWorkerError(EngineError):
    """No worker of the pool is alive, so queued jobs would wait forever."""


class JobFailedError(EngineError):
    """A queued job failed on the worker; the message says which job and why."""

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class DeadLetteredError(JobFailedError):
    """A job was delivered ``max_deliveries`` times without an answer and was dead-lettered."""


@dataclass(frozen=True, slots=True)
class QueueTiming:
    """Every time limit of the queue, shared by producers and workers.

    A held job counts as lost when it has been idle (delivered, not acknowledged) for
    ``reclaim_after_ms(work_tokens)`` = ``startup_s + work_tokens * seconds_per_token``: the
    slowest legitimate run of a job that may generate ``work_tokens`` tokens (its
    ``max_tokens``; one per continuation for a score job). The defaults assume 5 tokens/s per
    sequence under a full batch plus 30 s for queueing inside the engine and prefill, so a
    256-token job is reclaimed after 81 s and a 2048-token one after ~7 min. A job held by a
    worker whose heartbeat expired is reclaimed as soon as it is ``heartbeat_ttl_s`` idle.
    """

    startup_s: float = 30.0
    seconds_per_token: float = 0.2
    max_deliveries: int = 3
    heartbeat_ttl_s: float = 15.0
    reclaim_interval_s: float = 2.0
    poll_s: float = 1.0
    result_ttl_s: int = 24 * 3600
    no_worker_grace_s: float = 30.0
    # How long a call waits for its pool's first live worker (workers still loading a model)
    # before it fails with NoLiveWorkerError; 0: at once.
    pool_wait_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("startup_s", "seconds_per_token", "heartbeat_ttl_s", "reclaim_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.poll_s <= 0 or self.result_ttl_s <= 0 or self.no_worker_grace_s < 0:
            raise ValueError("poll_s and result_ttl_s must be > 0, no_worker_grace_s >= 0")
        if self.pool_wait_s < 0:
            raise ValueError(f"pool_wait_s: must be >= 0, got {self.pool_wait_s}")
        if self.max_deliveries < 1:
            raise ValueError(f"max_deliveries: must be >= 1, got {self.max_deliveries}")

    def reclaim_after_ms(self, work_tokens: int) -> int:
        return math.ceil(1000 * (self.startup_s + max(1, work_tokens) * self.seconds_per_token))

    @property
    def heartbeat_ttl_ms(self) -> int:
        return math.ceil(self.heartbeat_ttl_s * 1000)

    @property
    def poll_ms(self) -> int:
        return max(1, math.ceil(self.poll_s * 1000))


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    task_id: str
    kind: JobKind
    reply_to: str
    reclaim_after_ms: int
    body: dict[str, Any]
    entry_id: str = ""  # the stream entry id, once enqueued
    deliveries: int = 1  # how many times the group has handed it out, this time included

    def fields(self) -> dict[Any, Any]:  # str to str; redis-py wants its own key types
        job = {
            "job_id": self.job_id,
            "task_id": self.task_id,
            "kind": self.kind,
            "reply_to": self.reply_to,
            "reclaim_after_ms": self.reclaim_after_ms,
            "body": self.body,
        }
        return {"job": json.dumps(job, separators=(",", ":"))}

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str], deliveries: int = 1) -> Job:
        """The job of a stream entry; KeyError or ValueError when the entry is not a job."""
        job = json.loads(fields["job"])
        kind = job["kind"]
        if kind not in get_args(JobKind):
            raise ValueError(f"kind: unknown job kind {kind!r}")
        return cls(
            job_id=str(job["job_id"]),
            task_id=str(job["task_id"]),
            kind=kind,
            reply_to=str(job["reply_to"]),
            reclaim_after_ms=int(job["reclaim_after_ms"]),
            body=dict(job["body"]),
            entry_id=entry_id,
            deliveries=deliveries,
        )

    def request(self) -> GenerationRequest:
        return GenerationRequest.model_validate(self.body["request"])

    def score_args(self) -> tuple[str, list[str]]:
        return str(self.body["prefix"]), [str(c) for c in self.body["continuations"]]


def generation_body(request: GenerationRequest) -> dict[str, Any]:
    return {"request": request.model_dump(mode="json")}


def score_body(prefix: str, continuations: Sequence[str]) -> dict[str, Any]:
    return {"prefix": prefix, "continuations": list(continuations)}


def work_tokens(kind: JobKind, body: dict[str, Any]) -> int:
    """The tokens a job may decode (``max_tokens``), or one per continuation for a score job."""
    if kind == "generate":
        return int(body["request"]["max_tokens"])
    return len(body["continuations"])


def canonical_content(kind: JobKind, body: dict[str, Any]) -> str:
    """The job's content as canonical JSON: equal jobs give equal strings."""
    return json.dumps([kind, body], sort_keys=True, separators=(",", ":"))


def job_id_for(task_id: str, content: str, occurrence: int) -> str:
    """Deterministic: the ``occurrence``-th job of a task with this canonical ``content`` always
    gets the same id, so a restarted runner finds the results its earlier run recorded."""
    digest = hashlib.sha256(f"{occurrence}:{content}".encode()).hexdigest()[:32]
    return f"{task_id}.{digest}"


# -- outcomes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    generation: GenerationResult | None = None
    scores: list[float] = field(default_factory=list)
    failure: FailureKind | None = None
    error: str = ""

    def raise_for_failure(self, job_id: str) -> None:
        if self.ok:
            return
        if self.failure == "invalid":
            raise ValueError(self.error)
        if self.failure == "capability":
            raise EngineCapabilityError(self.error)
        if self.failure == "dead_letter":
            raise DeadLetteredError(self.error, job_id)
        raise JobFailedError(self.error, job_id)


def encode_generation(result: GenerationResult) -> str:
    usage = result.usage
    return json.dumps(
        {
            "ok": True,
            "text": result.text,
            "finish_reason": result.finish_reason,
            "model": result.model,
            "usage": [usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens],
            "queued_s": result.queued_s,
        }
    )


def encode_scores(scores: Sequence[float]) -> str:
    return json.dumps({"ok": True, "scores": [float(s) for s in scores]})


def encode_failure(failure: FailureKind, error: str) -> str:
    return json.dumps({"ok": False, "failure": failure, "error": error})


def decode_outcome(raw: str) -> Outcome:
    data = json.loads(raw)
    if not data["ok"]:
        return Outcome(ok=False, failure=data["failure"], error=data["error"])
    if "scores" in data:
        return Outcome(ok=True, scores=[float(s) for s in data["scores"]])
    prompt, completion, cached = data["usage"]
    generation = GenerationResult(
        text=data["text"],
        finish_reason=data["finish_reason"],
        usage=Usage(prompt, completion, cached),
        model=data["model"],
        # The worker engine's own queue wait; absent from outcomes written before it was kept.
        queued_s=float(data.get("queued_s", 0.0)),
    )
    return Outcome(ok=True, generation=generation)


def failure_kind(exc: BaseException) -> FailureKind | None:
    """The permanent failure an engine exception means, or None when a retry may succeed."""
    if isinstance(exc, EngineCapabilityError):
        return "capability"
    if isinstance(exc, ValueError):
        return "invalid"
    return None
