"""`kerasflow run`'s flags, derived from the settings declarations and grouped by step."""

from __future__ import annotations

import argparse
from typing import Any

from kerasflow.settings.base import bounds_of, choices_of
from kerasflow.settings.run import RUN_COUNTS, RUN_KEYS, RUN_SECONDS, step_of_keys
from kerasflow.settings.steps import STEP_SETTINGS

_TYPES = {int: int, float: float, str: str}


def flag_name(key: str) -> str:
    """`max_trials` -> `--max-trials`."""
    return "--" + key.replace("_", "-")


def _python_type(annotation: Any) -> type:
    for kind in (bool, int, float, str):
        if annotation is kind or kind in getattr(annotation, "__mro__", ()):
            return kind
    origin = getattr(annotation, "__origin__", None)
    if origin is not None:
        return _python_type(origin)
    return str


def _help(model: Any, key: str, shared_with: tuple[str, ...]) -> str:
    field = model.model_fields[key]
    text = field.description or ""
    default = field.get_default(call_default_factory=True)
    if default not in ("", None):
        shown = str(default).lower() if isinstance(default, bool) else default
        text += f" (default {shown})"
    if len(shared_with) > 1:
        text += f" [{', '.join(shared_with)}]"
    return text


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per setting, in one argument group per step (a setting several steps
    read sits in the first one's group and names the others)."""
    owners = step_of_keys()
    seen: set[str] = set()
    for step, model in STEP_SETTINGS.items():
        group = parser.add_argument_group(f"{step} settings", model.__doc__)
        own = [k for k in model.model_fields if k in model.__annotations__]
        inherited = [k for k in model.model_fields if k not in own]
        for key in own + inherited:
            field = model.model_fields[key]
            extra = field.json_schema_extra or {}
            if key in seen or not extra.get("flag", True):
                continue
            seen.add(key)
            text = _help(model, key, owners[key])
            allowed = choices_of(model, key)
            if allowed:
                # Validated with the settings, so a bad choice ends in the same one line.
                group.add_argument(
                    flag_name(key),
                    default=None,
                    metavar="{" + ",".join(a for a in allowed if a) + "}",
                    help=text,
                )
                continue
            kind = _python_type(field.annotation)
            if kind is bool:
                group.add_argument(
                    flag_name(key), action=argparse.BooleanOptionalAction, default=None, help=text
                )
            else:
                metavar = "N" if kind is int else ("X" if kind is float else None)
                if bounds_of(model, key) and kind is float:
                    metavar = "SHARE"
                group.add_argument(
                    flag_name(key), type=_TYPES[kind], default=None, metavar=metavar, help=text
                )
    run = parser.add_argument_group("run settings")
    for key, text in RUN_KEYS.items():
        run.add_argument(flag_name(key), type=str, default=None, help=text)
    for key, text in RUN_SECONDS.items():
        run.add_argument(flag_name(key), type=float, default=None, metavar="SECONDS", help=text)
    for key, text in RUN_COUNTS.items():
        run.add_argument(flag_name(key), type=int, default=None, metavar="N", help=text)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags set (None for a flag not given)."""
    keys = [*step_of_keys(), *RUN_KEYS, *RUN_SECONDS, *RUN_COUNTS]
    return {key: getattr(args, key) for key in keys if hasattr(args, key)}
