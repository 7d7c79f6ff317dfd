"""Prompt templates, one file per protocol step, filled with ``string.Template`` ($name fields).

``$`` placeholders are substituted in the template only: values (documents, model text) are
inserted verbatim and never re-expanded, so a document cannot inject further placeholders.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from string import Template

STEPS = (
    "remote_only_answer",
    "local_only_answer",
    "local_only_chunk",
    "local_only_combine",
    "minion_remote_system",
    "minion_remote_start",
    "minion_remote_asked",
    "minion_local_system",
    "minion_local_chunk",
    "minion_local_combine",
    "minion_remote_decide",
    "minions_decompose",
    "minions_job",
    "minions_aggregate",
)


@cache
def template(step: str) -> Template:
    if step not in STEPS:
        raise KeyError(f"no prompt template for step {step!r}")
    text = resources.files(__package__).joinpath(f"{step}.txt").read_text(encoding="utf-8")
    return Template(text.strip())


def render(step: str, **values: object) -> str:
    """The prompt for ``step``; a missing value raises ``KeyError`` naming it."""
    return template(step).substitute({name: str(value) for name, value in values.items()})
