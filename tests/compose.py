"""compose.yaml as the deployment tests read it: parsed, and its values as `docker
compose` sees them when no variable is set in the shell."""

import re
from pathlib import Path

import yaml

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[1] / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def with_defaults(value) -> str:
    """``value`` with each ``${NAME:-default}`` replaced by its default (``${NAME}`` by "")."""
    return VARIABLE.sub(lambda match: match["default"] or "", str(value))
