"""The evaluation harness over a synthetic dataset, with the scripted engine: exact accuracy."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from support.mi_engines import (
    NoScoreLocal,
    ScoringLocal,
    local_reader,
    planted_term,
    remote_planner,
)
from support.scripted_engine import ScriptedEngine

from analysis.evaluate import bootstrap_ci, evaluate, load_dataset, plot_accuracy_vs_cost
from analysis.synthetic_dataset import make_synthetic_dataset
from cli.bench import report_table
from engines.base import GenerationRequest
from engines.prices import PriceTable
from protocols import Options

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


async def test_mi_columns_per_protocol_have_the_hand_computed_values(tmp_path: Path) -> None:
    # 4 documents of 3 pages, one chunk per page; the reader's compression is one word likelier
    # under its own context (support.mi_engines), so each estimate is planted_term(N) exactly.
    dataset = make_synthetic_dataset(tmp_path / "bench", docs=4, pages=3, seed=7)
    local = ScoringLocal(model="smollm2-135m-instruct", context_window=100_000)
    report = await evaluate(
        dataset, ["minions", "minion", "remote_only"], local=local, remote=remote_planner(),
        prices=PriceTable.default(), remote_stand_in=False,
        options=Options(chunking="pages", max_remote_fraction=1000.0),
    )  # fmt: skip
    assert [s.accuracy for s in report.summaries] == [1.0, 1.0, 1.0]
    by_protocol = {p: [o for o in report.outcomes if o.protocol == p] for p in report.protocols}
    log2 = math.log(2)

    # minions: 3 own chunks + 3 shared by each earlier row: N = 3, 6, 9, 12; "answer: 4817." is
    # 2 tokens (scripted tokens are words).
    minions = by_protocol["minions"]
    assert [o.mi_status for o in minions] == ["succeeded"] * 4
    assert [o.mi_n_contexts for o in minions] == [3, 6, 9, 12]
    for outcome, n in zip(minions, [3, 6, 9, 12], strict=True):
        assert outcome.mi_nats == pytest.approx(planted_term(n), abs=1e-9)
        assert outcome.mi_bits == pytest.approx(planted_term(n) / log2, abs=1e-9)
        assert outcome.bits_per_token == pytest.approx(planted_term(n) / log2 / 2, abs=1e-9)
        assert outcome.mi_nats <= math.log(n)
    summary = report.summaries[0]
    expected_bits = sum(planted_term(n) for n in [3, 6, 9, 12]) / 4 / log2
    assert summary.mi_tasks == 4
    assert summary.mi_bits == pytest.approx(expected_bits, abs=1e-9)
    assert summary.bits_per_token == pytest.approx(expected_bits / 2, abs=1e-9)

    # minion: the documents fit, so each task has one context (the whole document); the first
    # task has no reference yet (skipped), then one more document per row: N = 2, 3, 4.
    minion = by_protocol["minion"]
    assert [o.mi_status for o in minion] == ["skipped", "succeeded", "succeeded", "succeeded"]
    assert "fewer than 2 contexts" in (minion[0].mi_error or "")
    assert [o.mi_n_contexts for o in minion] == [None, 2, 3, 4]
    for outcome, n in zip(minion[1:], [2, 3, 4], strict=True):
        assert outcome.mi_nats == pytest.approx(planted_term(n), abs=1e-9)
        assert outcome.bits_per_token == pytest.approx(planted_term(n) / log2, abs=1e-9)
    expected_bits = sum(planted_term(n) for n in [2, 3, 4]) / 3 / log2
    assert report.summaries[1].mi_tasks == 3
    assert report.summaries[1].mi_bits == pytest.approx(expected_bits, abs=1e-9)
    assert report.summaries[1].bits_per_token == pytest.approx(expected_bits, abs=1e-9)

    # remote_only sends no compression: no MI at all.
    assert all(o.mi_status is None and o.mi_bits is None for o in by_protocol["remote_only"])
    assert report.summaries[2].mi_bits is None and report.summaries[2].mi_tasks == 0
    table = report_table(report)
    headers = [column.header for column in table.columns]
    assert {"MI bits", "bits/token"} <= set(headers)
    assert list(table.columns[headers.index("MI bits")].cells) == [
        f"{report.summaries[0].mi_bits:.3f}", f"{report.summaries[1].mi_bits:.3f}", "-",
    ]  # fmt: skip


async def test_mi_is_unsupported_without_a_scoring_engine_and_can_be_switched_off(
    tmp_path: Path,
) -> None:
    dataset = make_synthetic_dataset(tmp_path / "bench", docs=2, pages=2, seed=3)
    common: dict[str, Any] = {
        "remote": remote_planner(), "prices": PriceTable.default(), "remote_stand_in": False,
        "options": Options(chunking="pages", max_remote_fraction=1000.0),
    }  # fmt: skip
    local = NoScoreLocal(default=local_reader, context_window=100_000)
    report = await evaluate(dataset, ["minions"], local=local, **common)
    assert [o.mi_status for o in report.outcomes] == ["unsupported", "unsupported"]
    assert report.summaries[0].mi_bits is None
    scoring = ScoringLocal(context_window=100_000)
    report = await evaluate(dataset, ["minions"], local=scoring, mi=False, **common)
    assert [o.mi_status for o in report.outcomes] == [None, None]
    assert scoring.score_calls == 0
