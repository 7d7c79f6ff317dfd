"""The Result every protocol returns: one shape for all four, JSON-serializable as is."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engines.usage import Usage
from protocols.baseline import Baseline
from protocols.cost_guard import CostGuardRecord
from protocols.privacy.report import PrivacyReport

ProtocolName = Literal["minion", "minions", "local_only", "remote_only"]
PlanSource = Literal["remote", "fallback"]


class TokenCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, usage: Usage) -> TokenCounts:
        return cls(**usage.to_dict())

    def as_usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, self.cached_prompt_tokens)


class CallRecord(BaseModel):
    """One engine call: a single request to the remote, or one batch of requests to the local."""

    model_config = ConfigDict(extra="forbid")

    side: Literal["local", "remote"]
    purpose: str = Field(description="decompose, aggregate, chat, decide, answer, job, ...")
    round: int
    model: str = Field(description="the model asked for, which prices the call")
    reply_model: str | None = Field(
        default=None, description="the model the reply named, when it named another one"
    )
    requests: int = 1
    usage: TokenCounts
    seconds: float
    queued_s: float = Field(
        default=0.0,
        description="summed seconds the call's requests waited in the engine's client-side queue "
        "before they were sent (part of ``seconds``; 0 for engines without such a queue)",
    )
    max_queued_s: float = Field(default=0.0, description="the longest of those waits")
    cost_usd: float = 0.0
    finish_reasons: list[str] = Field(default_factory=list)


class UsageReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    local: TokenCounts
    remote: TokenCounts
    local_requests: int
    remote_requests: int
    remote_calls: list[CallRecord] = Field(description="every remote call, in order")
    local_calls: list[CallRecord] = Field(description="every local batch, in order")


class CostReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    remote: float
    local: float = 0.0
    total: float
    remote_priced: bool = Field(description="false when the remote model has no price")


class Timings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    local_s: float = Field(description="wall time spent waiting on the local engine")
    remote_s: float = Field(description="wall time spent waiting on the remote engine")
    total_s: float
    local_queue_wait_s: float = Field(
        default=0.0,
        description="summed seconds this run's local requests (failed ones too) waited in the "
        "local engine's client-side queue for a free slot (MGW_LOCAL_ENGINE=openai); requests "
        "wait concurrently, so it can exceed local_s. 0 for engines without such a queue",
    )
    local_queue_wait_max_s: float = Field(
        default=0.0, description="the longest such wait of one local request of this run"
    )


class JobCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    planned: int = Field(description="(task, chunk, sample) jobs the plan asked for")
    run: int = 0
    kept: int = 0
    skipped: int = Field(
        default=0,
        description="planned but over the round's budget (max_jobs_per_round, "
        "max_local_tokens_per_round)",
    )
    dropped: dict[str, int] = Field(
        default_factory=dict,
        description="by reason: no_answer, truncated, unparseable, timeout, engine_error, ...",
    )


class LocalOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_index: int | None = None
    chunk_id: int | None = None
    sample: int = 0
    answer: str | None
    explanation: str = ""
    citation: str | None = None


class Crossing(BaseModel):
    """One text the local side wrote that crossed to the remote, and what it answered."""

    model_config = ConfigDict(extra="forbid")

    chunk_id: int | None = Field(description="the chunk it was written from; null: the documents")
    text: str = Field(description="the text as sent (without its location)")
    query: str = Field(description="the job's task or the remote's message it answered")


class RemoteMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: str
    text: str


class RoundRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    round: int
    remote_messages: list[RemoteMessage] = Field(default_factory=list)
    plan: dict[str, Any] | None = None
    plan_source: PlanSource | None = None
    jobs: JobCounts | None = None
    local_outputs: list[LocalOutput] = Field(default_factory=list)
    crossed: list[Crossing] = Field(
        default_factory=list, description="local outputs as they crossed to the remote"
    )
    decision: str | None = None
    scratchpad: str | None = None
    feedback: str | None = None


class DocumentStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: int
    pages: int
    chunks: int = 0
    chunk_tokens: int = 0
    chunk_overlap: int = 0
    chunking: str = ""


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer: str
    error: str | None = Field(
        default=None,
        description="why the run failed (the local model failed where nothing could stand in); "
        "the usage spent until then is still reported",
    )
    protocol: ProtocolName
    local_model: str
    remote_model: str
    remote_stand_in: bool = Field(description="the local model stood in for the remote")
    rounds: list[RoundRecord]
    usage: UsageReport
    cost_usd: CostReport
    timings: Timings
    compressions: list[str] = Field(description="texts the local side sent to the remote")
    warnings: list[str]
    stats: DocumentStats
    baseline: Baseline = Field(description="what remote_only would have sent (counted, not run)")
    cost_guard: CostGuardRecord = Field(
        description="the remote budget: baseline, budget, spent, what was trimmed, fallbacks"
    )
    privacy: PrivacyReport | None = Field(
        default=None, description="privacy mode's audit trail; None when privacy is off"
    )
