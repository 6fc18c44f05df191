"""The deployment files (docker-compose.yml, deploy/, Dockerfile) as the tests read them.

There is no Docker engine on the development machines: the tests read the files, fill in
the compose file's variables as docker compose does, and run what they describe with the
real programs where those are here (the server's settings, coturn's arguments).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
EXAMPLE_ENV_FILE = ROOT / "deploy" / "example.env"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
DOCKERFILE = ROOT / "Dockerfile"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariableError(KeyError):
    """A variable the compose file requires (`${NAME:?message}`) is not set."""


def env_file(path: Path = EXAMPLE_ENV_FILE) -> dict[str, str]:
    """NAME=value lines of an env file, as docker compose reads its `.env`."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def variables(text: str) -> set[str]:
    """The names of the variables `text` refers to."""
    return {match["name"] for match in VARIABLE.finditer(text)}


def interpolate(text: str, environment: dict[str, str]) -> str:
    """`text` with its variables filled in from `environment`, as docker compose does."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = environment.get(name)
        empty = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":-", "-") and empty:
            return arg
        if op in (":?", "?") and empty:
            raise MissingVariableError(f"{name}: {arg}")
        return current or ""

    return VARIABLE.sub(value, text)


def compose(environment: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml, its variables filled in from `environment` (raw without one)."""
    text = COMPOSE_FILE.read_text()
    if environment is not None:
        text = interpolate(text, environment)
    return yaml.safe_load(text)


def service(name: str, environment: dict[str, str] | None = None) -> dict[str, Any]:
    return compose(environment)["services"][name]


def options(arguments: list[str]) -> dict[str, list[str]]:
    """`--name=value` command-line arguments by name (a flag without a value: "")."""
    found: dict[str, list[str]] = {}
    for argument in arguments:
        if argument.startswith("--"):
            name, _, value = argument[2:].partition("=")
            found.setdefault(name, []).append(value)
    return found
