"""``minions-gw run`` with scripted engines standing in for the real ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.scripted_engine import ScriptedEngine
from typer.testing import CliRunner

import cli.run as run_module
from cli import app
from service.engines import EngineSet
from service.settings import Settings

PLAN = json.dumps({"tasks": [{"task": "Find the code", "chunks": "all"}]})
FINAL = json.dumps({"decision": "final_answer", "answer": "4817", "scratchpad": ""})
JOB = json.dumps({"explanation": "stated", "citation": "code is 4817", "answer": "4817"})


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> EngineSet:
    local = ScriptedEngine([(r"Excerpt", JOB)], default="4817", model="local")
    remote = ScriptedEngine(
        [(r"Plan the work", PLAN), (r"findings this round", FINAL)], default="4817", model="gpt-4o"
    )
    engine_set = EngineSet(local=local, remote=remote, remote_stand_in=False)
    monkeypatch.setattr(run_module, "build_engine_set", lambda settings: engine_set)
    monkeypatch.setattr(run_module, "load_settings", lambda: Settings(_env_file=None))  # type: ignore[call-arg]
    return engine_set


@pytest.fixture
def document(tmp_path: Path) -> Path:
    path = tmp_path / "report.txt"
    path.write_text("The weather was mild.\fThe access code is 4817.\fLunch was at noon.")
    return path


@pytest.mark.parametrize("protocol", ["minion", "minions", "local_only", "remote_only"])
def test_run_prints_the_answer_and_a_usage_table(
    engines: EngineSet, document: Path, protocol: str
) -> None:
    outcome = CliRunner().invoke(
        app, ["run", "--protocol", protocol, "--doc", str(document), "--question", "Code?"]
    )
    assert outcome.exit_code == 0, outcome.output
    assert "4817" in outcome.output
    assert "usage and cost" in outcome.output and "gpt-4o" in outcome.output


def test_run_json_prints_the_full_result(engines: EngineSet, document: Path) -> None:
    outcome = CliRunner().invoke(
        app,
        [
            "run",
            "--protocol",
            "minions",
            "--doc",
            str(document),
            "--doc",
            str(document),
            "--question",
            "Code?",
            "--json",
            "--max-rounds",
            "1",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    result = json.loads(outcome.output)
    assert result["answer"] == "4817" and result["protocol"] == "minions"
    assert result["stats"]["documents"] == 2
    assert {"local", "remote", "remote_calls"} <= set(result["usage"])


def test_run_reports_bad_input_in_one_line(engines: EngineSet, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    outcome = CliRunner().invoke(
        app, ["run", "--protocol", "minions", "--doc", str(empty), "--question", "Code?"]
    )
    assert outcome.exit_code == 1
    assert "empty.txt is empty" in outcome.output
