"""Reading the YAML files users write (run settings, cluster settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kerasflow.runtime.errors import UserError


def read_mapping(path: str, what: str = "config file") -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file is an empty mapping).

    Args:
        path: The file.
        what: What the file is, for messages ("config file", "cluster config file").

    Raises:
        UserError: when the file is missing, is not YAML or does not hold a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{what} {path} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must hold a mapping of keys to values")
    return data
