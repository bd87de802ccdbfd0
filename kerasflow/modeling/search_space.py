"""Search spaces: the hyperparameters kerasflow tunes, their defaults per modality, and the
overrides a user declares under `search_space:` in the run's YAML config.

A space maps a hyperparameter name to one spec, in one of three forms (as in YAML):

- a scalar: a fixed value (`optimizer: adam`),
- a list: a choice, its first item the default (`units: [64, 128, 256]`),
- a mapping with `min` and `max` (optional `step`, `sampling: linear|log`): a range
  (`learning_rate: {min: 1.0e-4, max: 1.0e-2, sampling: log}`).

Nothing here imports Keras: settings validate spaces before any step runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kerasflow.runtime.errors import UserError

OPTIMIZERS = ("adam", "rmsprop", "sgd", "adamw")
ACTIVATIONS = ("relu", "gelu", "elu", "selu", "tanh", "swish", "leaky_relu", "sigmoid")
INITIALIZERS = (
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "orthogonal",
)
FAMILIES = {"tabular": ("mlp",), "image": ("cnn", "mlp"), "text": ("conv1d", "lstm")}
TRANSFER_FAMILIES = ("transfer",)
"""The family of a head over a pretrained base (a run with `base_model`)."""
_ALL_FAMILIES = ("mlp", "cnn", "conv1d", "lstm", "transfer")


@dataclasses.dataclass(frozen=True)
class Param:
    """What one hyperparameter may hold."""

    kind: str  # int, float, str or bool
    help: str
    allowed: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False


PARAMS: dict[str, Param] = {
    "family": Param(
        "str",
        "model body: mlp, cnn (images), conv1d or lstm (text), transfer (with base_model)",
        _ALL_FAMILIES,
    ),
    "num_layers": Param("int", "hidden layers, conv blocks (cnn), text layers", low=1, high=16),
    "units": Param("int", "width of the dense layers (mlp, cnn head) and text layers", low=1),
    "filters": Param("int", "filters of the first conv block, doubled per block (cnn)", low=1),
    "embedding_dim": Param("int", "token embedding size (text)", low=1),
    "activation": Param("str", "activation of the hidden layers", ACTIVATIONS),
    "dropout": Param("float", "dropout rate", low=0.0, high=1.0, high_open=True),
    "l1": Param("float", "L1 weight penalty of hidden layers", low=0.0),
    "l2": Param("float", "L2 weight penalty of hidden layers", low=0.0),
    "batch_norm": Param("bool", "batch normalization after each hidden layer"),
    "initializer": Param("str", "kernel initializer of hidden layers", INITIALIZERS),
    "optimizer": Param("str", "optimizer", OPTIMIZERS),
    "learning_rate": Param("float", "initial learning rate", low=0.0, high=1.0, low_open=True),
    "batch_size": Param("int", "batch size (default: the run's batch_size)", low=1),
    "epochs": Param("int", "epochs per trial, not Hyperband (default: max_epochs)", low=1),
    "pooling": Param(
        "str", "how the head reads the base's feature map (transfer)", ("avg", "max", "flatten")
    ),
}
_FAMILY_ONLY = {"filters": ("cnn",), "embedding_dim": ("conv1d", "lstm"), "pooling": ("transfer",)}
"""Hyperparameters that only some families use (declared under a condition on `family`)."""


def _range(low: float, high: float, sampling: str = "linear", step: Any = None) -> dict:
    spec = {"min": low, "max": high, "sampling": sampling}
    if step is not None:
        spec["step"] = step
    return spec


DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "tabular": {
        "family": "mlp",
        "num_layers": _range(1, 3),
        "units": [64, 32, 128],
        "activation": ["relu", "gelu"],
        "dropout": [0.0, 0.2, 0.4],
        "l1": 0.0,
        "l2": [0.0, 1e-4],
        "batch_norm": [False, True],
        "initializer": "glorot_uniform",
        "optimizer": ["adam", "adamw"],
        "learning_rate": _range(3e-4, 3e-2, "log"),
    },
    "image": {
        "family": "cnn",
        "num_layers": _range(1, 2),
        "filters": [32, 64],
        "units": [64, 128],
        "activation": "relu",
        "dropout": [0.0, 0.25, 0.5],
        "l1": 0.0,
        "l2": 0.0,
        "batch_norm": False,
        "initializer": "glorot_uniform",
        "optimizer": "adam",
        "learning_rate": _range(3e-4, 3e-3, "log"),
    },
    "text": {
        "family": ["conv1d", "lstm"],
        "embedding_dim": [32, 64],
        "num_layers": _range(1, 2),
        "units": [32, 64],
        "activation": "relu",
        "dropout": [0.0, 0.25],
        "l1": 0.0,
        "l2": 0.0,
        "batch_norm": False,
        "initializer": "glorot_uniform",
        "optimizer": "adam",
        "learning_rate": _range(3e-4, 3e-3, "log"),
    },
}
"""Good first spaces per modality: the image one reaches >= 0.99 on digits with Hyperband."""

TRANSFER_SPACE: dict[str, Any] = {
    "family": "transfer",
    "pooling": ["avg", "flatten"],
    "num_layers": 1,
    "units": [128, 64, 256],
    "activation": "relu",
    "dropout": [0.2, 0.0, 0.5],
    "l1": 0.0,
    "l2": 0.0,
    "batch_norm": False,
    "initializer": "glorot_uniform",
    "optimizer": "adam",
    "learning_rate": _range(1e-4, 1e-2, "log"),
}
"""The head over a frozen pretrained base: dropout, then `num_layers` dense layers."""


def _coerce(name: str, value: Any) -> Any:
    """One value converted to the parameter's kind, or UserError."""
    param = PARAMS[name]
    bad = UserError(f"search_space '{name}': {value!r} is not a valid {param.kind}")
    if param.kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if param.kind == "str":
        if not isinstance(value, str):
            raise bad
        if value not in param.allowed:
            raise UserError(
                f"search_space '{name}': unknown value '{value}' "
                f"(choose from {', '.join(param.allowed)})"
            )
        return value
    if isinstance(value, bool):
        raise bad
    if isinstance(value, str):
        # YAML 1.1 reads 1e-4 (no dot) as a string.
        try:
            value = float(value)
        except ValueError:
            raise bad from None
    if not isinstance(value, (int, float)):
        raise bad
    if param.kind == "int":
        if float(value) != int(value):
            raise bad
        value = int(value)
    else:
        value = float(value)
    _check_bounds(name, value)
    return value


def _check_bounds(name: str, value: float) -> None:
    param = PARAMS[name]
    too_low = param.low is not None and (
        value < param.low or (param.low_open and value == param.low)
    )
    too_high = param.high is not None and (
        value > param.high or (param.high_open and value == param.high)
    )
    if too_low or too_high:
        low = "(" if param.low_open else "["
        high = ")" if param.high_open else "]"
        shown = f"{low}{param.low}, {'inf' if param.high is None else param.high}{high}"
        raise UserError(f"search_space '{name}': {value!r} is outside {shown}")


def parse_spec(name: str, raw: Any) -> dict[str, Any]:
    """Normalizes one YAML spec into `{"fixed": v}`, `{"choice": [...]}` or a range mapping.

    Raises:
        UserError: naming the hyperparameter and what is wrong with its spec.
    """
    if name not in PARAMS:
        raise UserError(
            f"unknown search_space key '{name}' (choose from {', '.join(sorted(PARAMS))})"
        )
    if isinstance(raw, dict):
        return _parse_range(name, raw)
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise UserError(f"search_space '{name}': an empty list offers nothing to choose")
        values = [_coerce(name, v) for v in raw]
        if len(set(map(repr, values))) != len(values):
            raise UserError(f"search_space '{name}': the list repeats a value")
        return {"choice": values}
    return {"fixed": _coerce(name, raw)}


def _parse_range(name: str, raw: dict) -> dict[str, Any]:
    param = PARAMS[name]
    unknown = sorted(set(raw) - {"min", "max", "step", "sampling"})
    if unknown:
        raise UserError(
            f"search_space '{name}': unknown range key '{unknown[0]}' "
            "(use min, max, step, sampling)"
        )
    if param.kind not in ("int", "float"):
        raise UserError(f"search_space '{name}' takes a value or a list, not a range")
    if "min" not in raw or "max" not in raw:
        raise UserError(f"search_space '{name}': a range needs both min and max")
    low, high = _coerce(name, raw["min"]), _coerce(name, raw["max"])
    if low >= high:
        raise UserError(f"search_space '{name}': min must be below max")
    sampling = raw.get("sampling", "linear")
    if sampling not in ("linear", "log"):
        raise UserError(f"search_space '{name}': sampling must be linear or log")
    if sampling == "log" and low <= 0:
        raise UserError(f"search_space '{name}': a log range needs min > 0")
    spec: dict[str, Any] = {"min": low, "max": high, "sampling": sampling}
    if raw.get("step") is not None:
        step = raw["step"]
        if isinstance(step, str):
            try:
                step = float(step)
            except ValueError:
                step = None
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise UserError(f"search_space '{name}': step must be a positive number")
        if param.kind == "int" and float(step) != int(step):
            raise UserError(f"search_space '{name}': step must be an integer")
        spec["step"] = int(step) if param.kind == "int" else float(step)
    return spec


def validate_overrides(overrides: Any) -> dict[str, dict[str, Any]]:
    """Parses the `search_space` mapping of a run config.

    Raises:
        UserError: for a key that is not a hyperparameter or a malformed spec.
    """
    if not isinstance(overrides, dict):
        raise UserError("config key 'search_space' must be a mapping of hyperparameter to spec")
    return {str(name): parse_spec(str(name), raw) for name, raw in overrides.items()}


def default_space(modality: str) -> dict[str, dict[str, Any]]:
    """The parsed default space of a modality (tabular, image or text)."""
    return {name: parse_spec(name, raw) for name, raw in DEFAULT_SPACES[modality].items()}


def resolve_space(
    modality: str, overrides: dict | None = None, *, transfer: bool = False
) -> dict[str, dict[str, Any]]:
    """The modality's default space with the user's overrides applied.

    Args:
        modality: tabular, image or text.
        overrides: The config's `search_space`.
        transfer: The head of a pretrained base (`base_model`, images): its own space.

    Raises:
        UserError: for a bad override or a model family the modality cannot use.
    """
    if transfer:
        space = {name: parse_spec(name, raw) for name, raw in TRANSFER_SPACE.items()}
    else:
        space = default_space(modality)
    space.update(validate_overrides(overrides or {}))
    families = space_values(space["family"])
    allowed = TRANSFER_FAMILIES if transfer else FAMILIES[modality]
    if not transfer and "transfer" in families:
        raise UserError("search_space 'family': transfer needs a base_model")
    for family in families:
        if family not in allowed:
            raise UserError(
                f"search_space 'family': {family} does not fit {modality} data "
                f"(choose from {', '.join(allowed)})"
            )
    return space


def grid_ready(space: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The space with every range that has no `step` cut to three points, for grid search.

    KerasTuner's grid takes ten points of a float range and every integer of an int range,
    which would spend a grid's trials on one dimension.
    """
    out = {}
    for name, spec in space.items():
        if "min" not in spec or "step" in spec:
            out[name] = spec
            continue
        low, high = spec["min"], spec["max"]
        mid = (low * high) ** 0.5 if spec["sampling"] == "log" else (low + high) / 2
        points = [low, mid, high]
        if PARAMS[name].kind == "int":
            points = sorted({int(round(p)) for p in points})
        else:
            points = [float(f"{p:.3g}") for p in points]
        # The middle first: it is the grid's first (default) value.
        ordered = [points[len(points) // 2]] + [p for p in points if p != points[len(points) // 2]]
        out[name] = {"choice": ordered}
    return out


def space_values(spec: dict[str, Any]) -> list[Any]:
    """The values a fixed or choice spec can take (ranges: their two ends)."""
    if "fixed" in spec:
        return [spec["fixed"]]
    if "choice" in spec:
        return list(spec["choice"])
    return [spec["min"], spec["max"]]


def declare(hp: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Registers the space's hyperparameters on a KerasTuner `hp`; returns the chosen values.

    Hyperparameters that only one model family uses are declared under a condition on
    `family`, so Grid and Bayesian search do not spend trials on values that change nothing.
    """
    values: dict[str, Any] = {"family": _declare_one(hp, "family", space["family"])}
    family_spec = space["family"]
    for name, spec in space.items():
        if name == "family":
            continue
        only = _FAMILY_ONLY.get(name)
        if only is None or "fixed" in family_spec:
            if only is None or values["family"] in only:
                values[name] = _declare_one(hp, name, spec)
            continue
        wanted = [f for f in only if f in space_values(family_spec)]
        if not wanted:
            continue
        with hp.conditional_scope("family", wanted):
            value = _declare_one(hp, name, spec)
        if values["family"] in only:
            values[name] = value
    return values


def _declare_one(hp: Any, name: str, spec: dict[str, Any]) -> Any:
    if "fixed" in spec:
        return hp.Fixed(name, spec["fixed"])
    kind = PARAMS[name].kind
    if "choice" in spec:
        if kind == "bool":
            # KerasTuner's Choice stores booleans as 0 and 1; Boolean keeps them booleans.
            return hp.Boolean(name, default=spec["choice"][0])
        return hp.Choice(name, spec["choice"], ordered=kind in ("int", "float"))
    if kind == "int":
        return hp.Int(
            name, spec["min"], spec["max"], step=spec.get("step"), sampling=spec["sampling"]
        )
    return hp.Float(
        name, spec["min"], spec["max"], step=spec.get("step"), sampling=spec["sampling"]
    )


def searched_names(space: dict[str, dict[str, Any]]) -> list[str]:
    """The hyperparameters that take more than one value."""
    return [name for name, spec in space.items() if "fixed" not in spec]


def log_sampled_names(space: dict[str, dict[str, Any]]) -> list[str]:
    """The hyperparameters sampled on a log scale (plotted on one)."""
    return [name for name, spec in space.items() if spec.get("sampling") == "log"]


def load_build_function(ref: str) -> Callable[..., Any]:
    """Resolves `module:function` or `path/to/file.py:function` to a callable.

    Raises:
        UserError: when the reference is malformed, the module cannot be imported or the
            attribute is missing or not callable.
    """
    module_name, sep, attr = ref.rpartition(":")
    if not sep or not module_name or not attr.isidentifier():
        raise UserError(f"build_model '{ref}' is not of the form module:function")
    try:
        if module_name.endswith(".py") or "/" in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise UserError(f"build_model: file not found: {module_name}")
            name = f"kerasflow_user_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            if str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(module_name)
    except UserError:
        raise
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"build_model: cannot import '{module_name}': {first}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise UserError(f"build_model: '{module_name}' has no function '{attr}'")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if params and len(params) not in (1, 2):
        raise UserError(f"build_model: {attr} must take (hp) or (hp, meta)")
    return fn


def absolute_build_ref(ref: str) -> str:
    """A `file.py:function` reference with the file made absolute (steps run elsewhere)."""
    module_name, sep, attr = ref.rpartition(":")
    if sep and (module_name.endswith(".py") or "/" in module_name):
        return f"{Path(module_name).absolute()}:{attr}"
    return ref
