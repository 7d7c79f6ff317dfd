"""The evaluation harness over a synthetic dataset, with the scripted engine: exact accuracy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.scripted_engine import ScriptedEngine

from analysis.costs import PriceTable
from analysis.evaluate import bootstrap_ci, evaluate, load_dataset, plot_accuracy_vs_cost
from analysis.synthetic_dataset import make_synthetic_dataset
from workers.engines.base import GenerationRequest

QUESTION = re.compile(r"What is the (.+?) for the (.+?)\?")


def reader(request: GenerationRequest) -> str:
    """A perfect reader: finds the planted sentence the question asks about, if it saw it."""
    prompt = "\n".join(m.content for m in request.messages)
    question = QUESTION.search(prompt)
    if question is None:
        return "unknown"
    thing, place = question.groups()
    found = re.search(rf"The {re.escape(thing)} for the {re.escape(place)} is (\d+)\.", prompt)
    return found.group(1) if found else "unknown"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = make_synthetic_dataset(tmp_path / "bench", docs=4, pages=3, seed=7)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[2]["answer"] = "0000"  # one reference is wrong, so a perfect reader scores exactly 3/4
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


async def test_remote_only_perfect_reader_scores_exactly_three_quarters(dataset: Path) -> None:
    engine = ScriptedEngine(default=reader, model="gpt-4o-mini", context_window=100_000)
    report = await evaluate(
        dataset, ["remote_only"], local=engine, remote=engine, prices=PriceTable.default(),
        remote_stand_in=False,
    )  # fmt: skip
    summary = report.summaries[0]
    assert summary.tasks == 4 and summary.errors == 0
    assert summary.accuracy == 0.75
    assert [o.correct for o in report.outcomes] == [True, True, False, True]
    assert summary.remote_prompt_tokens > 0
    assert summary.remote_cost_usd == pytest.approx(sum(o.remote_cost_usd for o in report.outcomes))
    assert summary.remote_cost_usd > 0
    low, high = summary.accuracy_ci95
    assert 0.0 <= low <= 0.75 <= high <= 1.0
    plot = plot_accuracy_vs_cost(report, dataset.parent / "plot.png")
    assert plot.stat().st_size > 1000


async def test_a_failing_protocol_counts_as_wrong_and_is_reported(dataset: Path) -> None:
    engine = ScriptedEngine(default=reader, fail_on="What is", context_window=100_000)
    report = await evaluate(
        dataset, ["remote_only"], local=engine, remote=engine, prices=PriceTable.default(),
        remote_stand_in=True, limit=2,
    )  # fmt: skip
    assert report.summaries[0].errors == 2
    assert report.summaries[0].accuracy == 0.0
    assert all(o.error for o in report.outcomes)


def test_dataset_errors_name_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"id": "a", "question": "q", "answer": "x", "documents": [{"text": "t"}]}\n{"id": "b"}\n'
    )
    with pytest.raises(ValueError, match="line 2: question"):
        load_dataset(path)
    path.write_text(
        '{"id": "a", "question": "q", "answer": "x", "documents": [{"text": "t", "path": "p"}]}\n'
    )
    with pytest.raises(ValueError, match=r"line 1: documents\.0"):
        load_dataset(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_dataset(tmp_path / "missing.jsonl")


def test_bootstrap_interval_brackets_the_mean_and_degenerates_on_constants() -> None:
    values = [1.0] * 30 + [0.0] * 10
    low, high = bootstrap_ci(values)
    assert low < 0.75 < high
    assert bootstrap_ci([1.0] * 5) == (1.0, 1.0)
