"""A benchmark's rows on disk as they finish: one JSON line per (protocol, row) outcome, beside
the report, so an interrupted run keeps what it measured and ``--resume`` runs only the rest."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydantic import ValidationError

from analysis.evaluate import TaskOutcome

logger = logging.getLogger(__name__)


def rows_path(report: Path) -> Path:
    """Where the rows of the report at ``report`` go: ``report.json`` -> ``report.rows.jsonl``."""
    return report.with_name(report.stem + ".rows.jsonl")


class RowLog:
    """Appends outcomes to a JSONL file, each line flushed to disk before the next row runs."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        _drop_unfinished_line(path)
        self._file = path.open("a", encoding="utf-8")

    def write(self, outcome: TaskOutcome) -> None:
        self._file.write(outcome.model_dump_json() + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def load_rows(path: Path) -> list[TaskOutcome]:
    """The outcomes written so far. A line cut short by a crash (the last one) is skipped with a
    warning; a damaged line elsewhere is an error naming its line number."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    outcomes: list[TaskOutcome] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            outcomes.append(TaskOutcome.model_validate_json(line))
        except ValidationError as exc:
            if number == len(lines):
                logger.warning("%s:%d: an unfinished last row is ignored (%s)", path, number, exc)
                continue
            raise ValueError(f"{path}:{number}: not a benchmark row: {exc}") from None
    return outcomes


def _drop_unfinished_line(path: Path) -> None:
    """Cut a last line a crash left without its newline, so new rows start on a line of their
    own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as file:
            file.truncate(data.rfind(b"\n") + 1)
