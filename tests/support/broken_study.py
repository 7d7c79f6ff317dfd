"""A test-only study that always raises (``{"broken": "support.broken_study"}``)."""

from __future__ import annotations

from pathlib import Path

from analysis.studies.base import Progress, StudyResult
from support.fake_study import Params

__all__ = ["Params", "run"]


def run(params: Params, progress: Progress, out_dir: Path) -> StudyResult:
    progress(1, 2, "about to break")
    raise RuntimeError("the fake study broke")
