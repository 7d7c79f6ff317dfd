"""Fixtures for the protocol tests: scripted engines that answer like a remote and a local model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support.scripted_engine import ScriptedEngine

from engines.prices import PriceTable
from protocols.task import Document, Options, Task


@pytest.fixture
def prices() -> PriceTable:
    return PriceTable.default()


@pytest.fixture
def pages_task() -> Callable[..., Task]:
    """A task over one document whose pages are the given texts (one chunk per page with
    ``chunking="pages"``). Its documents are a few lines, far too short for a round to cost less
    than sending them: the remote budget is lifted unless a test sets ``max_remote_fraction``."""

    def make(pages: list[str], question: str = "What is the code?", **options: Any) -> Task:
        return Task(
            question=question,
            documents=(Document(name="doc.txt", pages=tuple(pages)),),
            options=Options(**{"chunking": "pages", "max_remote_fraction": 1000.0, **options}),
        )

    return make


@pytest.fixture
def remote_engine() -> Callable[..., ScriptedEngine]:
    """A remote whose decompose and aggregate replies are given (strings or callables)."""

    def make(
        decompose: Any = None, aggregate: Any = None, model: str = "gpt-4o", **rules: Any
    ) -> ScriptedEngine:
        scripted = []
        if decompose is not None:
            scripted.append((r"Plan the work", decompose))
        if aggregate is not None:
            scripted.append((r"findings this round", aggregate))
        return ScriptedEngine(scripted, model=model, context_window=16_384)

    return make
