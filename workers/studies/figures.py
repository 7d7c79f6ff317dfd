"""Picking up the figures a finished study lists, for storage in Redis next to its result (so any
gateway can serve them, wherever the study ran). Only listed PNG files directly inside the
study's directory are taken, each and all together under a size cap."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

FIGURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\.png$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_FIGURE_BYTES = 5 * 1024 * 1024
MAX_TOTAL_BYTES = 20 * 1024 * 1024


def collect(
    out_dir: Path,
    names: Iterable[object],
    *,
    max_bytes: int = MAX_FIGURE_BYTES,
    max_total: int = MAX_TOTAL_BYTES,
) -> tuple[dict[str, bytes], dict[str, str]]:
    """The figures to store (name -> PNG bytes) and the ones left out (name -> why)."""
    figures: dict[str, bytes] = {}
    skipped: dict[str, str] = {}
    total = 0
    root = out_dir.resolve()
    for name in names:
        if not isinstance(name, str) or not FIGURE_NAME.fullmatch(name):
            skipped[str(name)[:130]] = "not a plain .png file name"
            continue
        path = (root / name).resolve()
        if path.parent != root or not path.is_file():
            skipped[name] = "no such file in the study's directory"
            continue
        size = path.stat().st_size
        if size > max_bytes:
            skipped[name] = f"{size} bytes, over the {max_bytes}-byte cap per figure"
            continue
        if total + size > max_total:
            skipped[name] = f"over the {max_total}-byte cap for all figures of a study"
            continue
        data = path.read_bytes()
        if not data.startswith(PNG_SIGNATURE):
            skipped[name] = "not a PNG image"
            continue
        figures[name] = data
        total += size
    for name, why in skipped.items():
        logger.warning("figure %s of %s not stored: %s", name, out_dir.name, why)
    return figures, skipped
