"""What privacy mode reports in the Result: the audit trail an operator shows a compliance officer.

It names the placeholders and their types, never the values behind them: the mapping from
placeholder to value exists only in the running task's ``Pseudonymizer``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from protocols.task import PrivacyMode

# The audit trail is stored with the task: a long run (many rounds, whole documents) must not
# grow its record without bound. The first requests are kept whole; the rest are counted.
CROSSED_MAX_REQUESTS = 200
CROSSED_MAX_CHARS = 200_000


class CrossedMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str
    content: str


class PrivacyReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: PrivacyMode = "pseudonymize"
    ner_model: str | None = Field(
        default=None, description="the spaCy pipeline that found names; None: patterns only"
    )
    entities: dict[str, int] = Field(
        default_factory=dict, description="distinct values found, by entity type"
    )
    replacements: dict[str, int] = Field(
        default_factory=dict,
        description="placeholders in what crossed to the remote, by entity type (occurrences)",
    )
    placeholders: dict[str, str] = Field(
        default_factory=dict, description="every placeholder used and its entity type"
    )
    crossed: list[list[CrossedMessage]] = Field(
        default_factory=list,
        description="the remote requests' messages exactly as the remote received them, in "
        f"order, up to {CROSSED_MAX_REQUESTS} requests and {CROSSED_MAX_CHARS:,} characters",
    )
    crossed_left_out: int = Field(
        default=0, description="remote requests that crossed but are not in ``crossed`` (the cap)"
    )
    added_seconds: float = Field(
        default=0.0, description="time spent detecting, replacing and restoring what crossed"
    )
    document_seconds: float = Field(
        default=0.0, description="time spent analysing the documents first (once per task)"
    )
    notes: list[str] = Field(default_factory=list)
