"""``minions-gw bench make-private``: planted personal data, three kinds of question, and the
planted list kept out of the task the models see."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.paths import REPO_ROOT

from analysis.evaluate import load_dataset, row_to_task


def make_private(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", "bench", "make-private", "--out", str(out), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_make_private_writes_files_with_planted_values_and_three_kinds(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "bench",
            "make-private",
            "--out",
            str(tmp_path),
            "--docs",
            "3",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = load_dataset(tmp_path / "dataset.jsonl")
    assert [row.metadata["privacy"]["kind"] for row in rows] == [
        "no_pii",
        "pii_answer",
        "multi_person",
    ]
    for row in rows:
        task = row_to_task(row, tmp_path)
        text = task.documents[0].text
        planted = row.metadata["privacy"]["planted"]
        entities = {item["entity"] for item in planted}
        assert entities >= {"PERSON", "PHONE_NUMBER", "EMAIL_ADDRESS", "US_SSN", "CREDIT_CARD"}
        assert all(item["value"] in text for item in planted)
        assert task.metadata == {}  # the planted values never reach the task
        assert json.dumps(planted) not in task.model_dump_json()
    pii_row = rows[1]
    assert any(item["value"] == pii_row.answer for item in pii_row.metadata["privacy"]["planted"])


def test_make_private_refuses_too_few_pages(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "bench",
            "make-private",
            "--out",
            str(tmp_path),
            "--pages",
            "2",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "pages: at least 3" in done.stderr + done.stdout
