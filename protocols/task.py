"""What a protocol is asked to do: a question over documents, with options.

Every model here forbids unknown fields, and every invalid value raises a ``ValueError`` (pydantic's
``ValidationError``) whose location names the field, e.g. ``documents.0.text``.

Documented limits (they keep a single request from exhausting the gateway's memory):

* one document: at most ``MAX_DOCUMENT_CHARS`` characters (16 Mi, about 4 M tokens);
* all documents of a task together: at most ``MAX_TOTAL_CHARS`` characters (32 Mi);
* at most ``MAX_DOCUMENTS`` documents.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_DOCUMENT_CHARS = 16 * 1024 * 1024
MAX_TOTAL_CHARS = 32 * 1024 * 1024
MAX_DOCUMENTS = 64
MAX_QUESTION_CHARS = 20_000
MAX_PAGES = 20_000
PAGE_BREAK = "\f"

MetadataValue = str | int | float | bool | None
ChunkingStrategy = Literal["tokens", "pages", "paragraphs"]
PrivacyMode = Literal["off", "pseudonymize"]


class Document(BaseModel):
    """One plain-text document. ``pages`` keeps page boundaries (from a PDF, or form feeds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="document", min_length=1, max_length=256)
    pages: tuple[str, ...] = Field(min_length=1, max_length=MAX_PAGES)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, max_length=64)

    def __init__(self, *, text: str | None = None, **data: Any) -> None:
        # ``Document(text=...)`` is the common case; it becomes ``pages`` in _text_to_pages.
        if text is not None:
            data["text"] = text
        super().__init__(**data)

    @model_validator(mode="before")
    @classmethod
    def _text_to_pages(cls, data: Any) -> Any:
        # Accept the convenient ``Document(text=...)``: form feeds are page breaks, as in pdftotext.
        if isinstance(data, dict) and "text" in data:
            data = dict(data)
            text = data.pop("text")
            if "pages" in data:
                raise ValueError("text: give either text or pages, not both")
            if not isinstance(text, str):
                raise ValueError("text: must be a string")
            if len(text) > MAX_DOCUMENT_CHARS:
                raise ValueError(
                    f"text: the document has {len(text):,} characters; "
                    f"the limit is {MAX_DOCUMENT_CHARS:,} per document"
                )
            data["pages"] = tuple(text.split(PAGE_BREAK))
        return data

    @field_validator("pages")
    @classmethod
    def _pages_have_text(cls, pages: tuple[str, ...]) -> tuple[str, ...]:
        size = sum(len(page) for page in pages)
        if size > MAX_DOCUMENT_CHARS:
            raise ValueError(
                f"the document has {size:,} characters; the limit is {MAX_DOCUMENT_CHARS:,}"
            )
        if not any(page.strip() for page in pages):
            raise ValueError("the document is empty (no text on any page)")
        return pages

    @property
    def text(self) -> str:
        return "\n\n".join(page.strip() for page in self.pages if page.strip())

    @property
    def chars(self) -> int:
        return sum(len(page) for page in self.pages)


class Options(BaseModel):
    """Protocol knobs. A protocol's constructor config sets defaults; a task's options override
    only the fields the task sets explicitly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rounds: int = Field(default=3, ge=1, le=10)
    chunking: ChunkingStrategy = "tokens"
    chunk_tokens: int = Field(default=1000, ge=32, le=65_536)
    chunk_overlap: int = Field(default=50, ge=0, le=8192)
    max_tasks_per_round: int = Field(default=8, ge=1, le=32, description="K: tasks in one plan")
    samples_per_job: int = Field(default=1, ge=1, le=16)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_jobs_per_round: int = Field(
        default=512,
        ge=1,
        le=8192,
        description="local jobs one MinionS round may run; when the plan asks for more, each "
        "task keeps its chunks most relevant to it (BM25)",
    )
    max_local_tokens_per_round: int | None = Field(
        default=None,
        ge=1,
        description="local tokens (prompt and reply bound) one MinionS round may use; filled by "
        "relevance like max_jobs_per_round. Unset: no token bound",
    )
    job_concurrency: int = Field(default=128, ge=1, le=8192, description="jobs per engine batch")
    job_max_tokens: int = Field(default=256, ge=16, le=8192)
    local_max_tokens: int = Field(default=384, ge=16, le=8192)
    remote_max_tokens: int = Field(default=1024, ge=16, le=32_768)
    json_retries: int = Field(default=3, ge=0, le=10)
    remote_opens: bool = Field(
        default=False,
        description="minion: the remote writes the first message to the local model (one more "
        "remote call, re-read by every decision). Default: the first message is the user's "
        "question and the remote's first call is its first decision",
    )
    max_remote_fraction: float = Field(
        default=0.5,
        gt=0.0,
        le=1000.0,
        description="minion/minions: remote prompt tokens of all rounds and retries together, at "
        "most this fraction of what remote_only would send (1.0: never more than remote-only)",
    )
    seed: int = 0
    privacy: PrivacyMode = Field(
        default="off",
        description="pseudonymize: identifying values are replaced by placeholders before any "
        "text reaches the remote, and restored in its replies (docs/privacy.md)",
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Options:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap: {self.chunk_overlap} must be below "
                f"chunk_tokens ({self.chunk_tokens})"
            )
        return self

    def merged(self, overrides: Options) -> Options:
        """These options with every field that ``overrides`` set explicitly replaced."""
        update = overrides.model_dump(include=overrides.model_fields_set)
        return Options.model_validate({**self.model_dump(), **update})


class Task(BaseModel):
    """A question over one or more documents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field(max_length=MAX_QUESTION_CHARS)
    documents: tuple[Document, ...] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, max_length=64)
    options: Options = Field(default_factory=Options)

    @field_validator("question")
    @classmethod
    def _question_not_blank(cls, question: str) -> str:
        if not question.strip():
            raise ValueError("the question is empty")
        return question.strip()

    @field_validator("documents")
    @classmethod
    def _total_size(cls, documents: tuple[Document, ...]) -> tuple[Document, ...]:
        total = sum(document.chars for document in documents)
        if total > MAX_TOTAL_CHARS:
            raise ValueError(
                f"the documents have {total:,} characters together; "
                f"the limit is {MAX_TOTAL_CHARS:,}"
            )
        return documents

    @property
    def page_count(self) -> int:
        return sum(len(document.pages) for document in self.documents)
