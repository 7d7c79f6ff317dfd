"""The layers of the product, kept by parsing every module's imports.

A package may import only the packages below it (docs/architecture.md draws the same table).
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.paths import REPO_ROOT

# package -> the packages of ours it may import (itself always allowed).
ALLOWED: dict[str, frozenset[str]] = {
    "engines": frozenset(),
    "protocols": frozenset({"engines"}),
    "analysis": frozenset({"protocols", "engines"}),
    # The study consumer runs analysis/studies in its child process.
    "workers": frozenset({"engines", "protocols", "analysis"}),
    "service": frozenset({"engines", "protocols", "analysis", "workers"}),
    "gateway": frozenset({"service", "engines", "protocols", "analysis", "workers"}),
    "cli": frozenset({"gateway", "service", "engines", "protocols", "analysis", "workers"}),
}
PACKAGES = frozenset(ALLOWED)


def imported_packages(path: Path) -> Iterator[tuple[int, str]]:
    """(line, top-level package of ours) for every import in the module at ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                yield node.lineno, top


def layer_violations(root: Path) -> list[str]:
    found = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, imported in imported_packages(path):
                if imported != package and imported not in allowed:
                    found.append(f"{path.relative_to(root)}:{line}: {package} imports {imported}")
    return found


def test_every_package_imports_only_the_layers_below_it() -> None:
    assert layer_violations(REPO_ROOT) == []


def test_every_package_of_the_layout_exists() -> None:
    for package in PACKAGES:
        assert (REPO_ROOT / package / "__init__.py").is_file(), package


@pytest.mark.parametrize(
    ("package", "source", "bad"),
    [
        ("engines", "from protocols.task import Task\n", "protocols"),
        ("protocols", "def f():\n    import service.settings\n", "service"),
        ("workers", "from gateway import app\n", "gateway"),
        ("service", "from cli import main\n", "cli"),
    ],
)
def test_a_forbidden_import_is_found(tmp_path: Path, package: str, source: str, bad: str) -> None:
    for name in PACKAGES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / package / "module.py").write_text(source)
    assert layer_violations(tmp_path) == [
        f"{package}/module.py:" + _line(source) + f": {package} imports {bad}"
    ]


def _line(source: str) -> str:
    return str(next(i for i, text in enumerate(source.splitlines(), 1) if "import" in text))
