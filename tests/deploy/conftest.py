"""Helpers for the deployment files at the repository root (docker/, docker-compose.yml)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKER_DIR = ROOT / "docker"
SCHEMA_FILE = Path(__file__).parent / "compose_spec" / "compose_spec.json"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} (Compose interpolation)
_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)
_ENV_LINE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")
_COMMENTED_ENV_LINE = re.compile(r"^#\s*(?P<name>[A-Z][A-Z0-9_]*)=")


def env_example() -> tuple[dict[str, str], set[str]]:
    """The variables .env.example sets, and the ones it documents commented out."""
    values: dict[str, str] = {}
    commented: set[str] = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        if match := _ENV_LINE.match(line):
            values[match["name"]] = match["value"]
        elif match := _COMMENTED_ENV_LINE.match(line):
            commented.add(match["name"])
    return values, commented


def interpolated_variables(text: str) -> set[str]:
    return {match["name"] for match in _INTERPOLATION.finditer(text)}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution, applied to the file's text before YAML parsing (as
    Compose does it, so `replicas: ${N:-1}` becomes an integer)."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if op in (":-", ":?") and not value:
            value = None
        if value is not None:
            return value
        if op and op.endswith("?"):
            raise KeyError(f"{name}: required by docker-compose.yml ({arg})")
        return arg or ""

    return _INTERPOLATION.sub(substitute, text.replace("$$", "\0")).replace("\0", "$")
