"""Request and response models of the native API (``/v1/tasks``, ``/v1/documents``, admin).

The OpenAI-compatible shapes live in ``service.chat_schemas``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocols.result import ProtocolName
from protocols.task import MAX_QUESTION_CHARS, MetadataValue, Options, PrivacyMode

TaskStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class DocumentInput(BaseModel):
    """One document: exactly one of ``text``, ``pdf_base64`` or ``document_id``."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, description="plain text; form feeds split pages")
    pdf_base64: str | None = Field(default=None, description="a PDF file, base64-encoded")
    document_id: str | None = Field(
        default=None, max_length=64, description="from POST /v1/documents"
    )
    name: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> DocumentInput:
        given = [f for f in ("text", "pdf_base64", "document_id") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of text, pdf_base64 or document_id")
        return self


class TaskOptions(Options):
    """Protocol options, plus what the gateway decides per task."""

    remote_model: str | None = Field(
        default=None, max_length=128, description="a remote model the gateway allows"
    )
    max_cost_usd: float | None = Field(
        default=None, gt=0, le=10_000, description="cap on the task's remote cost"
    )

    def protocol_options(self) -> dict[str, Any]:
        """Only the protocol fields the client set (the protocol's defaults fill the rest)."""
        return self.model_dump(
            include=self.model_fields_set - {"remote_model", "max_cost_usd"}, mode="json"
        )


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    protocol: ProtocolName
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    documents: list[DocumentInput] = Field(min_length=1)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, max_length=64)
    options: TaskOptions = Field(default_factory=TaskOptions)
    reference_answer: str | None = Field(
        default=None, max_length=MAX_QUESTION_CHARS, description="graded against the answer"
    )

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, question: str) -> str:
        if not question.strip():
            raise ValueError("the question is empty")
        return question


class TaskAccepted(BaseModel):
    id: str
    status: TaskStatus


class ErrorBody(BaseModel):
    type: str
    message: str
    param: str | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class Accuracy(BaseModel):
    exact_match: bool
    f1: float


MIStatus = Literal["pending", "succeeded", "skipped", "unsupported", "error", "cancelled"]


class TaskMI(BaseModel):
    """Mutual information of a task's compressions (docs/mutual_information.md). ``mi_*`` are
    raw (may be < 0); ``*_display`` are clipped at 0. No field holds any document text."""

    status: MIStatus
    error: str | None = Field(default=None, description="why it was skipped or failed")
    expires_at: float | None = Field(
        default=None,
        description="pending: when the estimate is due at the latest; past it, it is reported "
        "as an error (the process scoring it died)",
    )
    mi_nats: float | None = None
    mi_bits: float | None = None
    bits_per_token: float | None = None
    mi_bits_display: float | None = None
    bits_per_token_display: float | None = None
    upper_bound_nats: float | None = Field(default=None, description="log N")
    standard_error_nats: float | None = None
    n_contexts: int | None = Field(default=None, description="N: task + reference contexts")
    n_task_contexts: int | None = None
    n_reference_contexts: int | None = None
    n_compressions: int | None = None
    mean_compression_tokens: float | None = None
    scorer_model: str | None = None
    scorer: str | None = Field(default=None, description="kind:model:template")
    reference_set_id: str | None = None
    negative_query: str | None = None
    context_token_budget: int | None = None
    truncated_contexts: int | None = None
    seconds: float | None = Field(default=None, description="time spent scoring")
    finished_at: float | None = None


class TaskBilling(BaseModel):
    billed_usd: float = Field(
        description="remote spend billed to the key for this task, over all its attempts"
    )
    reserved_usd: float = Field(description="what is still reserved for it (0 once it ended)")
    budget_overrun: bool = Field(
        description="the provider reported usage costing more than the task's reservation; it "
        "was billed as reported and the key's balance may be negative"
    )
    reply_models: list[str] = Field(
        default_factory=list,
        description="models the remote's replies named instead of the one asked for (calls are "
        "priced as the model asked for)",
    )


class TaskView(BaseModel):
    id: str
    object: Literal["task"] = "task"
    status: TaskStatus
    protocol: ProtocolName
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    result: dict[str, Any] | None = Field(
        default=None, description="the protocol's Result: answer, usage, cost_usd, timings, ..."
    )
    error: ErrorBody | None = None
    partial_usage: dict[str, Any] | None = Field(
        default=None, description="usage billed for a task that did not finish"
    )
    accuracy: Accuracy | None = None
    mi: TaskMI | None = Field(
        default=None,
        description="minion/minions: I(X;Z) of what the local model sent to the remote, scored "
        "in the background after the task succeeded (status 'pending' until then)",
    )
    billing: TaskBilling
    warnings: list[str] = Field(
        default_factory=list, description="``budget_overrun: ...`` when the task overran"
    )


class TaskList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TaskView]
    next_cursor: str | None = None
    has_more: bool = False


class DocumentCreated(BaseModel):
    document_id: str
    name: str
    pages: int
    tokens: int


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    admin: bool = False
    budget_usd: float | None = Field(default=None, ge=0, le=1_000_000)
    rate_limit_per_minute: int | None = Field(default=None, gt=0, le=1_000_000)
    privacy: PrivacyMode | None = Field(
        default=None,
        description="the key's tasks' privacy mode when they do not choose (MGW_PRIVACY_DEFAULT "
        "when unset)",
    )


class KeyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    privacy: PrivacyMode | None = Field(
        description="the key's tasks' privacy mode when they do not choose; null: the "
        "gateway's default (MGW_PRIVACY_DEFAULT)",
    )


class KeyView(BaseModel):
    id: str
    name: str
    admin: bool
    budget_usd: float | None
    spent_usd: float
    reserved_usd: float
    rate_limit_per_minute: int
    created_at: float
    privacy: PrivacyMode | None = None


class KeyCreated(KeyView):
    key: str = Field(description="the secret: shown once, stored only as a hash")


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyView]


class UsageReport(BaseModel):
    by: Literal["key", "protocol", "day"]
    data: dict[str, dict[str, float | None]] = Field(
        description="counters per value; savings_factor is null when no task had a priced "
        "remote-only baseline"
    )


class PoolView(BaseModel):
    pool: str
    queued: int = Field(description="jobs in the pool's stream: waiting or held by a worker")
    held: int
    waiting: int
    dead_lettered: int
    workers: list[dict[str, Any]] = Field(description="live workers and their registration")
    stats: dict[str, str]


class WorkersReport(BaseModel):
    local_pool: str | None = Field(description="the pool this gateway's local calls go to")
    tasks_waiting: int
    pools: list[PoolView]
    studies_waiting: int = Field(default=0, description="studies queued, not yet taken")
    study_consumers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="consumers of the study queue: name, studies held, seconds since last read",
    )


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    store: bool
    engines: bool
    runner: bool
    pools: dict[str, int] = Field(
        default_factory=dict,
        description="live workers of each configured local-model pool (MGW_LOCAL_POOL); not "
        "ready while one has none (tasks submitted meanwhile wait for them, MGW_POOL_WAIT_S)",
    )
