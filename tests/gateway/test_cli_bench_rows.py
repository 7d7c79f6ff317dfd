"""``minions-gw bench`` keeps what it measured: rows are written as they finish, a killed run
resumes with only the rest, and the table stays readable when stdout is not a terminal.

The local engine is a real OpenAI-compatible server on 127.0.0.1 (the test server, fronting a
perfect scripted reader), so no model is loaded."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.openai_server import FaultPlan, build_app, serve_in_thread
from support.scripted_engine import SlowScriptedEngine

from analysis.synthetic_dataset import make_synthetic_dataset
from engines.base import GenerationRequest

QUESTION = re.compile(r"What is the (.+?) for the (.+?)\?")
CLI = [sys.executable, "-m", "cli", "bench"]


def reader(request: GenerationRequest) -> str:
    prompt = "\n".join(m.content for m in request.messages)
    question = QUESTION.search(prompt)
    if question is None:
        return "unknown"
    thing, place = question.groups()
    found = re.search(rf"The {re.escape(thing)} for the {re.escape(place)} is (\d+)\.", prompt)
    return found.group(1) if found else "unknown"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FaultPlan]]:
    faults = FaultPlan()
    backend = SlowScriptedEngine(delay_s=0.4, default=reader, context_window=100_000)
    with serve_in_thread(build_app(backend, faults)) as url:
        yield url + "/v1", faults


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_synthetic_dataset(tmp_path / "bench", docs=5, pages=2, seed=3)


def bench_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "MGW_LOCAL_ENGINE": "openai",
        "MGW_LOCAL_BASE_URL": url,
        "MGW_LOCAL_MAX_MODEL_LEN": "100000",
        "COLUMNS": "60",  # what a narrow pipe gets
    }


def bench_args(dataset: Path, out: Path, *more: str) -> list[str]:
    return [*CLI, "--dataset", str(dataset), "--protocols", "remote_only", "--no-mi",
            "--out", str(out), *more]  # fmt: skip


def rows_of(out: Path) -> list[dict[str, object]]:
    path = out.with_name(out.stem + ".rows.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_killed_run_resumes_with_only_the_rest(
    server: tuple[str, FaultPlan], dataset: Path, tmp_path: Path
) -> None:
    url, faults = server
    out = tmp_path / "report.json"
    faults.reset()
    run = subprocess.Popen(
        bench_args(dataset, out), env=bench_env(url), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    rows = out.with_name("report.rows.jsonl")
    deadline = time.monotonic() + 60
    while not rows.exists() or len(rows.read_text().splitlines()) < 2:
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)  # no chance to clean up: only what was written survives
    run.wait(timeout=10)
    kept = rows_of(out)
    assert 2 <= len(kept) < 5 and not out.exists()
    with rows.open("a") as damaged:  # a row cut short mid-write
        damaged.write('{"id": "half')

    faults.reset()
    resumed = subprocess.run(
        bench_args(dataset, out, "--resume", "--format", "json"), env=bench_env(url),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    (summary,) = json.loads(resumed.stdout)
    assert summary["tasks"] == 5 and summary["accuracy"] == 1.0
    chat_requests = faults.requests - 1  # the engine's start-up probe asks once
    assert chat_requests == 5 - len(kept)
    final = rows_of(out)
    assert sorted(str(row["id"]) for row in final) == sorted(
        json.loads(line)["id"] for line in dataset.read_text().splitlines()
    )
    report = json.loads(out.read_text())
    assert report["summaries"][0]["tasks"] == 5 and len(report["outcomes"]) == 5


def test_the_table_is_readable_through_a_pipe(
    server: tuple[str, FaultPlan], dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    result = subprocess.run(
        bench_args(dataset, out, "--limit", "1"), env=bench_env(server[0]),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| protocol |"))
    assert "| remote USD |" in header and header.endswith("| errors |")  # nothing cut off
    row = next(line for line in lines if line.startswith("| remote_only |"))
    assert row.count("|") == header.count("|")


def test_resume_needs_a_report_to_resume(dataset: Path) -> None:
    result = subprocess.run(
        [*CLI, "--dataset", str(dataset), "--resume"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "--resume needs --out" in result.stderr
