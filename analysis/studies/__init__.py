"""Sidecar research studies that run on the gateway's workers (see ``base.py``)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import cast

from analysis.studies.base import StudyModule

# name -> module; imported lazily because every study pulls in torch.
STUDIES: dict[str, str] = {
    "gp": "analysis.studies.gp",
    "ssm": "analysis.studies.ssm",
    "lora": "analysis.studies.lora",
}

STUDY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MODULE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def study_registry(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The built-in studies plus ``extra`` (``MGW_EXTRA_STUDIES``: an operator's own study
    modules, or a test's). Extra names may not shadow a built-in; every module path must be a
    dotted Python name (it is imported, never evaluated)."""
    registry = dict(STUDIES)
    for name, module in (extra or {}).items():
        if not STUDY_NAME.fullmatch(name):
            raise ValueError(
                f"extra_studies: {name!r} is not a valid study name (lowercase letters, digits "
                "and '_', starting with a letter, at most 40)"
            )
        if name in STUDIES:
            raise ValueError(f"extra_studies: {name!r} would shadow a built-in study")
        if not MODULE_PATH.fullmatch(module):
            raise ValueError(
                f"extra_studies: {module!r} (study {name!r}) is not a dotted module path"
            )
        registry[name] = module
    return registry


def load_study(name: str, registry: Mapping[str, str] | None = None) -> StudyModule:
    """Import the module of the study called ``name`` (from ``registry``, default the
    built-in studies)."""
    registry = STUDIES if registry is None else registry
    if name not in registry:
        raise ValueError(f"study: unknown study {name!r}; choose one of {sorted(registry)}")
    return cast(StudyModule, importlib.import_module(registry[name]))
