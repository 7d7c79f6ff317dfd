"""The JSON shapes models must answer in: MinionS job plans, local job outputs, remote decisions.

The remote model only ever returns data validated here. It never writes code the gateway runs:
a plan is a list of (task, advice, chunk selection) records, nothing more. Unknown fields are
rejected and every string and list has a length limit, so a plan cannot smuggle in instructions
for the gateway or blow up the job count.

Plans are validated with a context: ``JobPlan.model_validate(data, context={"chunk_count": n,
"max_tasks": k})`` checks chunk ids against the document and the task count against K.
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

MAX_PLAN_TASKS = 32
MAX_CHUNK_IDS = 1024
MAX_KEYWORDS = 16
MAX_TOP_K = 64

Keyword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]
Decision = Literal["final_answer", "request_more"]


class KeywordSelection(BaseModel):
    """Pick the ``top_k`` chunks that BM25 ranks best for ``keywords``."""

    model_config = ConfigDict(extra="forbid")

    keywords: list[Keyword] = Field(min_length=1, max_length=MAX_KEYWORDS)
    top_k: int = Field(default=3, ge=1, le=MAX_TOP_K)


ChunkSelection = (
    Literal["all"]
    | Annotated[list[NonNegativeInt], Field(min_length=1, max_length=MAX_CHUNK_IDS)]
    | KeywordSelection
)


class PlannedTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=1000)
    advice: str = Field(default="", max_length=1000)
    chunks: ChunkSelection = "all"

    @field_validator("chunks")
    @classmethod
    def _chunk_ids_exist(cls, chunks: ChunkSelection, info: ValidationInfo) -> ChunkSelection:
        chunk_count = (info.context or {}).get("chunk_count")
        if isinstance(chunks, list):
            if chunk_count is not None:
                outside = [chunk_id for chunk_id in chunks if chunk_id >= chunk_count]
                if outside:
                    raise ValueError(
                        f"chunk id {outside[0]} is out of range: the documents have "
                        f"{chunk_count} chunks, ids 0 to {chunk_count - 1}"
                    )
            return list(dict.fromkeys(chunks))  # drop repeats, keep order
        return chunks


class JobPlan(BaseModel):
    """What the remote asks the local model to do in one MinionS round."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[PlannedTask] = Field(min_length=1, max_length=MAX_PLAN_TASKS)

    @field_validator("tasks")
    @classmethod
    def _at_most_k(cls, tasks: list[PlannedTask], info: ValidationInfo) -> list[PlannedTask]:
        max_tasks = (info.context or {}).get("max_tasks")
        if max_tasks is not None and len(tasks) > max_tasks:
            raise ValueError(f"the plan has {len(tasks)} tasks; at most {max_tasks} are allowed")
        return tasks

    @classmethod
    def default(cls, question: str) -> JobPlan:
        """The fallback plan: the question itself, over every chunk."""
        return cls(tasks=[PlannedTask(task=question[:1000], advice="", chunks="all")])


class JobOutput(BaseModel):
    """What one local job returns. ``answer`` null (or "none") means the chunk had nothing."""

    # The small local model may add a stray field; that is no reason to throw its work away.
    model_config = ConfigDict(extra="ignore")

    # Short limits on purpose: as structured-output constraints they also keep a rambling small
    # model from running into max_tokens (a truncated job is dropped).
    explanation: str = Field(default="", max_length=400)
    citation: str | None = Field(default=None, max_length=400)
    answer: str | None = Field(max_length=400)

    @property
    def has_answer(self) -> bool:
        return self.answer is not None and not is_empty_answer(self.answer)


class AggregateDecision(BaseModel):
    """The remote's verdict after reading a round's local findings."""

    model_config = ConfigDict(extra="forbid")

    decision: Decision
    answer: str | None = Field(default=None, max_length=8000)
    scratchpad: str = Field(default="", max_length=4000)
    feedback: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _answer_when_final(self) -> AggregateDecision:
        if self.decision == "final_answer" and not (self.answer or "").strip():
            raise ValueError("answer: required when decision is final_answer")
        return self


class FinalAggregateDecision(AggregateDecision):
    """The last round's shape: only a final answer is accepted (and the schema requires it)."""

    decision: Literal["final_answer"]
    answer: str = Field(min_length=1, max_length=8000)


class ChatDecision(BaseModel):
    """Minion: the remote answers, or writes the next message to the local worker."""

    model_config = ConfigDict(extra="forbid")

    decision: Decision
    answer: str | None = Field(default=None, max_length=8000)
    message: str | None = Field(default=None, max_length=4000)

    @model_validator(mode="after")
    def _payload_present(self) -> ChatDecision:
        if self.decision == "final_answer" and not (self.answer or "").strip():
            raise ValueError("answer: required when decision is final_answer")
        if self.decision == "request_more" and not (self.message or "").strip():
            raise ValueError("message: required when decision is request_more")
        return self


class FinalChatDecision(ChatDecision):
    decision: Literal["final_answer"]
    answer: str = Field(min_length=1, max_length=8000)


_EMPTY_ANSWERS = {"", "none", "null", "n/a", "na", "nothing", "unknown", "not found", "no answer"}


def normalize(text: str) -> str:
    return " ".join(text.lower().strip().strip(".").split())


# Sentences a small model writes instead of null when the excerpt has nothing; only phrasings that
# say so about the text itself ("None of the patients..." is an answer).
_SAYS_NOTHING = re.compile(
    r"(?:the |this )?(?:excerpt|text|document|passage|chunk)s? (?:does|do|did) not (?:contain|"
    r"mention|say|state|specify|provide|include|answer)|(?:it is |this is )?not (?:mentioned|"
    r"stated|specified|provided|found|given) in the (?:excerpt|text|document|passage|chunk)|"
    r"there is no (?:information|mention)|no information (?:about|on|in|is given)|"
    r"(?:i )?(?:cannot|can't|could not|am unable to) (?:find|determine|answer)"
)


def is_empty_answer(text: str) -> bool:
    """Whether a local reply means "nothing here": null, "none", "NONE.", "Not found", or a
    sentence that says the excerpt does not contain it."""
    # Quotes, markdown and ellipses around the word do not count ("*None*", "...").
    cleaned = normalize(text).strip("\"'*`.… ")
    return cleaned in _EMPTY_ANSWERS or bool(_SAYS_NOTHING.match(cleaned))


# Sizing the job schema: JSON syntax takes about this many tokens, and English text (even
# repetitive) averages at least this many characters per token.
_JOB_SYNTAX_TOKENS = 24
_CHARS_PER_TOKEN = 3
_JOB_FIELD_SHARES = {"answer": 0.4, "explanation": 0.35, "citation": 0.25}
# A citation is a short quote: the finding already names its chunk.
QUOTE_CHARS = 160
# The findings of a round should fit its room several times over: a job's reply is sized to a
# share of it, between what one useful finding needs and the most one may take.
_FINDINGS_PER_ROOM = 6
_MIN_FINDING_TOKENS, _MAX_FINDING_TOKENS = 48, 160


def job_tokens_for(room_tokens: int, job_max_tokens: int) -> int:
    """What one job may write when the round's findings have ``room_tokens`` at the remote:
    short by construction (the schema's field bounds follow from it), never above
    ``job_max_tokens``."""
    finding = room_tokens // _FINDINGS_PER_ROOM
    finding = max(_MIN_FINDING_TOKENS, min(_MAX_FINDING_TOKENS, finding))
    return min(job_max_tokens, finding + _JOB_SYNTAX_TOKENS)


def job_output_schema(max_tokens: int) -> dict[str, Any]:
    """The structured-output schema for a local job, with string limits sized so the whole JSON
    fits ``max_tokens``: a small model that rambles inside a field is cut off by the grammar,
    not by max_tokens (which would truncate the JSON and lose the job)."""
    schema = copy.deepcopy(JobOutput.model_json_schema())
    budget = max(0, max_tokens - _JOB_SYNTAX_TOKENS) * _CHARS_PER_TOKEN
    for name, share in _JOB_FIELD_SHARES.items():
        limit = max(16, min(QUOTE_CHARS if name == "citation" else 400, int(budget * share)))
        field_schema = schema["properties"][name]
        for variant in field_schema.get("anyOf", [field_schema]):
            if variant.get("type") == "string":
                variant["maxLength"] = limit
    return schema


# Characters of a plan's JSON around its tasks, and of one task's keys, quotes and the keyword
# selection's wrapper; a task's own texts get at least _MIN_TASK_CHARS.
_PLAN_SYNTAX_CHARS = 24
_TASK_SYNTAX_CHARS = 80
_MIN_TASK_CHARS = 60


def job_plan_schema(max_tasks: int, chunk_count: int, max_tokens: int = 1024) -> dict[str, Any]:
    """The structured-output schema for a plan over ``chunk_count`` chunks with at most
    ``max_tasks`` tasks: what validation would reject, the grammar does not let the model write
    (fewer retries). As for job outputs, the task count and every string and list are sized so
    the longest plan fits ``max_tokens`` (at ``_CHARS_PER_TOKEN``): a plan cut off by max_tokens
    is invalid JSON, and each retry costs a full remote prompt."""
    schema = copy.deepcopy(JobPlan.model_json_schema())
    budget = max(0, max_tokens * _CHARS_PER_TOKEN - _PLAN_SYNTAX_CHARS)
    tasks = max(1, min(max_tasks, budget // (_TASK_SYNTAX_CHARS + _MIN_TASK_CHARS)))
    schema["properties"]["tasks"]["maxItems"] = tasks
    # Each task's share, less its syntax, split between its texts and its chunk selection.
    room = max(_MIN_TASK_CHARS, budget // tasks - _TASK_SYNTAX_CHARS - 2)
    definitions = schema["$defs"]
    planned = definitions["PlannedTask"]["properties"]
    planned["task"]["maxLength"] = min(300, room * 45 // 100)
    planned["advice"]["maxLength"] = min(300, room * 25 // 100)
    selection = room * 30 // 100
    id_chars = len(str(max(chunk_count - 1, 0))) + 2  # digits, comma, space
    for variant in planned["chunks"]["anyOf"]:
        if variant.get("type") == "array":
            variant["items"]["maximum"] = max(chunk_count - 1, 0)
            variant["maxItems"] = max(1, min(MAX_CHUNK_IDS, chunk_count, selection // id_chars))
    keywords = definitions["KeywordSelection"]["properties"]["keywords"]
    keywords["maxItems"] = max(1, min(MAX_KEYWORDS, selection // 24))
    keywords["items"]["maxLength"] = max(3, min(40, selection // keywords["maxItems"] - 4))
    return schema


def json_schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema sent as structured-output constraint for ``model``."""
    return model.model_json_schema()
