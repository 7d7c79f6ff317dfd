"""Sidecar research studies that run on the gateway's workers (see ``base.py``)."""

from __future__ import annotations

import importlib
from typing import cast

from analysis.studies.base import StudyModule

# name -> module; imported lazily because every study pulls in torch.
STUDIES: dict[str, str] = {
    "gp": "analysis.studies.gp",
    "ssm": "analysis.studies.ssm",
    "lora": "analysis.studies.lora",
}


def load_study(name: str) -> StudyModule:
    """Import the module of the study called ``name``."""
    if name not in STUDIES:
        raise ValueError(f"study: unknown study {name!r}; choose one of {sorted(STUDIES)}")
    return cast(StudyModule, importlib.import_module(STUDIES[name]))
