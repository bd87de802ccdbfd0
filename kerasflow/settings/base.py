"""The machinery every step's settings share: value types, field metadata, one-line errors.

A step's settings are a pydantic model whose fields each declare, once, their name, type,
default, allowed values or range and help text (`Field(description=...)`). Everything else
derives from those declarations: the `kerasflow run` flags (kerasflow.settings.cli), the keys
of a YAML config file, the validation below and the keys and defaults of the steps' settings
structures in the pipeline. The few headline pipeline parameters (a step's `HEADLINE`) are also
named in the DAG's signature, with their defaults read from the declarations.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import annotated_types
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError

from kerasflow.runtime.errors import UserError


def _integer(value: Any) -> Any:
    # KFP hands integers back from JSON as floats (3.0); a bool or a string is a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("must be an integer")
    return int(value)


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return float(value)


def _text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


Integer = Annotated[int, BeforeValidator(_integer)]
"""An int field: integral floats (as KFP returns them) pass, bools and strings do not."""
Number = Annotated[float, BeforeValidator(_number)]
"""A float field: ints and floats pass, bools and strings do not."""
Text = Annotated[str, BeforeValidator(_text)]
"""A str field that takes strings only."""
Flag = StrictBool
"""A bool field that takes true or false only."""


def setting(
    default: Any,
    help: str,
    *,
    flag: bool = True,
    cluster_only: bool = False,
    **constraints: Any,
) -> Any:
    """Declares one setting: its default, help text and constraints (pydantic's `ge`, `lt`...).

    Args:
        default: The default value (a factory is used for dicts).
        help: One line for `--help`, the README and the KFP UI.
        flag: Whether `kerasflow run` has a flag for it (otherwise a YAML key only).
        cluster_only: A setting that only means something on a cluster (no local flag).
        **constraints: Range constraints passed to pydantic's Field.
    """
    extra = {"flag": flag and not cluster_only, "cluster_only": cluster_only}
    if isinstance(default, dict):
        return Field(default_factory=dict, description=help, json_schema_extra=extra, **constraints)
    return Field(default, description=help, json_schema_extra=extra, **constraints)


class StepSettings(BaseModel):
    """Base of one step's settings. Subclasses declare fields with `setting(...)`.

    Attributes:
        HEADLINE: Fields that are top-level pipeline parameters (passed to the step's component
            one by one) rather than keys of the step's settings structure.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    HEADLINE: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def parse(cls, values: StepSettings | Mapping[str, Any] | None = None, **extra: Any):
        """Validated settings from a mapping (YAML, KFP parameter) or an instance, plus keys.

        Raises:
            UserError: one line naming the first unknown key or bad value.
        """
        if isinstance(values, cls) and not extra:
            return values
        data = values.model_dump() if isinstance(values, BaseModel) else dict(values or {})
        data.update(extra)
        try:
            return cls(**data)
        except ValidationError as exc:
            raise UserError(describe_error(cls, exc)) from None

    @classmethod
    def from_parameters(
        cls,
        structure: StepSettings | Mapping[str, Any] | None,
        headline: Mapping[str, Any] | None = None,
    ):
        """A step's settings from its pipeline parameters: its settings structure and the
        headline parameters it reads. With `headline` given, the structure may not hold a
        headline key too (the two would compete); without it, `structure` holds every key.

        Raises:
            UserError: for a headline key inside the structure, an unknown key or a bad value.
        """
        if headline is not None and isinstance(structure, Mapping):
            check_no_headline_keys(cls, structure)
        return cls.parse(structure, **dict(headline or {}))

    @classmethod
    def kfp_defaults(cls) -> dict[str, Any]:
        """The defaults of every non-headline field: the default of the step's KFP parameter."""
        return cls().model_dump(exclude=set(cls.HEADLINE))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of every field, in declaration order."""
        return tuple(cls.model_fields)


def check_no_headline_keys(model: type[StepSettings], structure: Mapping[str, Any]) -> None:
    """Refuses a headline key inside a step's settings structure.

    Raises:
        UserError: naming the key and where it belongs.
    """
    for key in structure:
        if key in model.HEADLINE:
            raise UserError(
                f"'{key}' is a pipeline parameter of its own: set it there, not in a step's "
                "settings structure"
            )


def choices_of(model: type[BaseModel], name: str) -> tuple[Any, ...]:
    """The allowed values of a Literal field (empty for other fields)."""
    annotation = model.model_fields[name].annotation
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return ()


def bounds_of(model: type[BaseModel], name: str) -> dict[str, Any]:
    """The range constraints of a field: {'ge': 1} or {'gt': 0, 'lt': 0.5}."""
    out: dict[str, Any] = {}
    for item in model.model_fields[name].metadata:
        for key in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(annotated_types, key.capitalize())):
                out[key] = getattr(item, key)
    return out


def _range_text(bounds: dict[str, Any]) -> str:
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le", bounds.get("lt"))
    if low is not None and high is not None:
        return f"must be between {low} and {high}"
    if "ge" in bounds:
        return f"must be >= {bounds['ge']}"
    if "gt" in bounds:
        return f"must be > {bounds['gt']}"
    if "le" in bounds:
        return f"must be <= {bounds['le']}"
    return f"must be < {bounds['lt']}"


TYPE_MESSAGES = {
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
}
"""One-line wording of pydantic's type errors, shared by every settings file's messages."""


def describe_error(model: type[BaseModel], exc: ValidationError) -> str:
    """One line for the first error of a validation: names the key and the bad value."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    name = loc[0] if loc else ""
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"unknown config key '{name}'"
    if error["type"] == "literal_error" and name in model.model_fields:
        shown = ", ".join(str(c) for c in choices_of(model, name) if c != "")
        return f"unknown {name} '{value}' (choose from {shown})"
    if error["type"] in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return f"config key '{name}' {_range_text(bounds_of(model, name))}, got {value!r}"
    if error["type"] in TYPE_MESSAGES:
        return f"config key '{name}' {TYPE_MESSAGES[error['type']]}, got {value!r}"
    message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    where = ".".join(loc)
    return f"config key '{where}' {message}, got {value!r}" if where else message
