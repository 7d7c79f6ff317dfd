"""``minions-gw doctor`` run as an operator runs it, against a generic OpenAI-compatible server
(the test server) and an address where nothing listens. (The real llama.cpp server's report is
tested in tests/engines/test_local_server_llamacpp.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from support.openai_server import FaultPlan, build_app, serve_in_thread
from support.scripted_engine import ScriptedEngine

CLI = [sys.executable, "-m", "cli"]


def doctor(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", **env},
    )


@pytest.fixture(scope="module")
def generic_server() -> Iterator[str]:
    with serve_in_thread(build_app(ScriptedEngine(default="hello"), FaultPlan())) as url:
        yield url + "/v1"


def test_a_generic_server_is_reported_with_fixes(generic_server: str) -> None:
    result = doctor(MGW_LOCAL_ENGINE="openai", MGW_LOCAL_BASE_URL=generic_server)
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "openai-compatible" in out and "1-token latency" in out
    assert "fix: the server does not report its parallel slots" in out
    assert "fix: the server does not report its context window" in out
    assert "MGW_LOCAL_TOKENIZER" in out
    assert "note: no remote model is configured" in out


def test_json_output_names_what_was_detected(generic_server: str) -> None:
    result = doctor(
        "--format",
        "json",
        MGW_LOCAL_ENGINE="openai",
        MGW_LOCAL_BASE_URL=generic_server,
        MGW_LOCAL_MAX_CONCURRENCY="3",
        MGW_LOCAL_MAX_MODEL_LEN="2048",
    )
    local, remote = json.loads(result.stdout)
    assert local["server"]["family"] == "openai-compatible"
    assert local["server"]["structured_outputs"] == "response_format"
    assert (local["concurrency"], local["context_window"]) == (3, 2048)
    assert local["latency_1_token_s"] > 0
    assert local["tokenizer"].startswith("estimate")
    assert remote["engine"] == "stand-in" and remote["problems"] == []


def test_nothing_listening_says_how_to_fix_it() -> None:
    result = doctor(MGW_LOCAL_ENGINE="openai", MGW_LOCAL_BASE_URL="http://127.0.0.1:9/v1")
    assert result.returncode == 1
    assert "cannot reach the local server" in result.stdout
    assert "MGW_LOCAL_BASE_URL" in result.stdout
    assert "Traceback" not in result.stderr
