"""A tiny test-only study (``MGW_EXTRA_STUDIES='{"fake": "support.fake_study"}'``), so the study
queue is tested end to end in seconds. Product code never imports it.

``quick``: 3 steps, at once. ``full``: 60 steps of 0.1 s (6 s), long enough to be
interrupted or to run while language-model jobs are served. It writes its pid to ``pid`` in its
directory first (so a test can check the process is gone), a listed figure ``curve.png`` and an
unlisted ``secret.png``, and reports its torch thread count and CPU niceness.
"""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path

from analysis.studies.base import DeviceName, PresetName, Progress, StudyParams, StudyResult


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


class Params(StudyParams):
    steps: int = 3
    sleep_s: float = 0.0

    @classmethod
    def preset(cls, name: PresetName, device: DeviceName = "cpu", seed: int = 0) -> Params:
        if name == "quick":
            return cls(preset=name, device=device, seed=seed, steps=3)
        return cls(preset=name, device=device, seed=seed, steps=60, sleep_s=0.1)


def run(params: Params, progress: Progress, out_dir: Path) -> StudyResult:
    import torch

    (out_dir / "pid").write_text(str(os.getpid()))
    for step in range(params.steps):
        time.sleep(params.sleep_s)
        progress(step + 1, params.steps, "stepping")
    (out_dir / "curve.png").write_bytes(tiny_png())
    (out_dir / "secret.png").write_bytes(tiny_png())  # on disk, but not listed: never served
    return StudyResult(
        study="fake",
        params=params.model_dump(mode="json"),
        metrics={
            "steps": params.steps,
            "seed": params.seed,
            "threads": torch.get_num_threads(),
            "niceness": os.nice(0),
        },
        figures=["curve.png"],
    )
