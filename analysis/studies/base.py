"""The interface every sidecar study implements, and the small runner that executes one.

A study is a module in this package with:

* ``Params``: a pydantic model of its parameters, with a ``preset(name)`` classmethod that
  returns the ``quick`` (<= 2 minutes on 2 CPU cores) or ``full`` (a GPU) parameters;
* ``run(params, progress, out_dir) -> StudyResult``.

Seeds live in ``Params``; results are reproducible on the same device.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

PresetName = Literal["quick", "full"]
DeviceName = Literal["cpu", "cuda"]


class Progress(Protocol):
    """Reports how far a study has come; ``total`` may change as the study learns its size."""

    def __call__(self, done: int, total: int, message: str = "") -> None: ...


def no_progress(done: int, total: int, message: str = "") -> None:
    """A progress sink that discards every report."""


class StudyParams(BaseModel):
    """Base of every study's ``Params``: the fields the runner itself needs."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    # Stored as ``preset_name`` (given as ``preset=``) so that the ``preset`` classmethod below,
    # which every study overrides, does not collide with a field of the same name.
    preset_name: PresetName = Field(default="quick", alias="preset")
    device: DeviceName = "cpu"
    seed: int = 0

    @classmethod
    def preset(cls, name: PresetName, device: DeviceName = "cpu", seed: int = 0) -> StudyParams:
        """The parameters of preset ``name``; studies override this for their ``full`` preset."""
        return cls(preset=name, device=device, seed=seed)


class StudyResult(BaseModel):
    """What a study returns: JSON-serializable metrics and tables, and the figures it saved."""

    model_config = ConfigDict(extra="forbid")

    study: str
    params: dict[str, Any]
    metrics: dict[str, Any] = Field(default_factory=dict)
    figures: list[str] = Field(default_factory=list, description="file names inside out_dir")
    seconds: float = 0.0
    device_name: str = ""


class StudyModule(Protocol):
    """The shape of a study module (checked structurally, never by isinstance)."""

    Params: type[StudyParams]

    def run(self, params: Any, progress: Progress, out_dir: Path) -> StudyResult: ...


def describe_device(device: str) -> str:
    """A human name for the device the study ran on, recorded with every result."""
    import platform

    import torch

    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: 'cuda' was asked for but no CUDA device is available")
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_study(
    name: str,
    params: StudyParams,
    out_dir: Path,
    progress: Progress = no_progress,
    module_loader: Callable[[str], StudyModule] | None = None,
) -> StudyResult:
    """Run one study, write ``result.json`` beside its figures in ``out_dir``, return the result."""
    from analysis.studies import load_study

    module = (module_loader or load_study)(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    describe_device(params.device)  # fail fast on a missing CUDA device, before any work
    started = time.perf_counter()
    result = module.run(params, progress, out_dir)
    result.seconds = time.perf_counter() - started
    # Described after the run: studies may change torch's thread count while they run.
    result.device_name = describe_device(params.device)
    (out_dir / "result.json").write_text(json.dumps(result.model_dump(mode="json"), indent=2))
    logger.info("study %s finished in %.1f s; result in %s", name, result.seconds, out_dir)
    return result
