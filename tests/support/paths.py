"""Paths the tests share (importable anywhere, unlike conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# The converted bundled model is cached across test runs (conversion takes ~25 s).
MODEL_CACHE_DIR = Path(os.environ.get("MGW_TEST_DATA_DIR", REPO_ROOT / ".mgw" / "test-data"))
