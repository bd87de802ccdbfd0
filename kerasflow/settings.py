"""Typed run settings: defaults, YAML config files and validation.

One `RunConfig` describes a training run. The CLI builds it from a YAML file and flags; the
pipeline factory takes the same fields as typed parameters with the same defaults. Nothing here
reads the environment at import time.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from kerasflow import constants as C
from kerasflow import dataoptions
from kerasflow.errors import UserError

DEFAULT_IMAGE = "ghcr.io/kerasflow/kerasflow:0.1.0"
"""The one container image every component runs in (`kerasflow compile --image` overrides it)."""

DEFAULT_WORK_DIR = "kerasflow-work"


@dataclasses.dataclass
class RunConfig:
    """Every tunable of one training run.

    Attributes mirror the `kerasflow run` flags (dashes become underscores) and the keys of a
    YAML config file.
    """

    data: str = "builtin:digits"
    label: str = ""
    task: str = ""
    modality: str = ""
    tuner: str = "hyperband"
    max_trials: int = 10
    max_epochs: int = 9
    final_epochs: int = 30
    batch_size: int = 32
    patience: int = 3
    augment_factor: int = 1
    augment_flip: bool = False
    augment_methods: str = ""
    synonyms: str = ""
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    image_size: str = ""
    text_column: str = ""
    time_column: str = ""
    missing_values: str = "median"
    outliers: str = "iqr"
    outlier_action: str = "clip"
    drop_duplicates: bool = True
    drop_id_columns: bool = True
    schema: str = ""
    max_missing_share: float = 0.3
    max_anomaly_share: float = 0.01
    min_class_rows: int = 3
    scaling: str = "zscore"
    imbalance: str = "class_weights"
    folds: int = 0
    thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
    champion_tolerance: float = 0.01
    slice_by: str = ""
    model_name: str = "kerasflow-model"
    serving_dir: str = ""
    tracking_uri: str = ""
    experiment: str = C.DEFAULT_EXPERIMENT
    work_dir: str = DEFAULT_WORK_DIR
    seed: int = 42
    search_space: dict = dataclasses.field(default_factory=dict)
    build_model: str = ""
    objective: str = ""
    direction: str = ""
    time_budget: str = ""
    max_consecutive_failures: int = 3
    kfold: int = 0
    tuner_workers: int = 1
    trials_per_process: int = 5
    refit: bool = False
    lr_schedule: str = ""
    warm_start: bool = False

    def __post_init__(self) -> None:
        validate_config(self)

    def resolved_serving_dir(self) -> str:
        """The serving base directory: the flag, else `<work_dir>/models`."""
        return self.serving_dir or str(Path(self.work_dir, "models").absolute())

    def resolved_tracking_uri(self) -> str:
        """The MLflow tracking URI: the flag, else MLFLOW_TRACKING_URI, else SQLite in work_dir."""
        if self.tracking_uri:
            return self.tracking_uri
        env = os.environ.get("MLFLOW_TRACKING_URI", "")
        if env:
            return env
        return "sqlite:///" + str(Path(self.work_dir, "mlflow.db").absolute())


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}

_CHOICES = {
    "tuner": C.TUNERS,
    "task": ("",) + C.TASKS,
    "modality": ("",) + C.MODALITIES,
    "direction": ("", "max", "min"),
    "lr_schedule": ("", "cosine", "exponential"),
    "missing_values": dataoptions.MISSING_POLICIES,
    "outliers": dataoptions.OUTLIER_METHODS,
    "outlier_action": dataoptions.OUTLIER_ACTIONS,
    "scaling": dataoptions.SCALINGS,
    "imbalance": dataoptions.IMBALANCE_POLICIES,
}
_MINIMUMS = {
    "max_trials": 1,
    "max_epochs": 1,
    "final_epochs": 1,
    "batch_size": 1,
    "patience": 1,
    "augment_factor": 0,
    "seed": 0,
    "max_consecutive_failures": 1,
    "kfold": 0,
    "tuner_workers": 1,
    "trials_per_process": 0,
    "min_class_rows": 1,
    "folds": 0,
}
LOWER_IS_BETTER = frozenset({"loss", "mae", "rmse", "mse"})


def validate_config(cfg: RunConfig) -> None:
    """Checks types and ranges of every field.

    Raises:
        UserError: naming the first field that is wrong.
    """
    if isinstance(cfg.time_budget, (int, float)) and not isinstance(cfg.time_budget, bool):
        cfg.time_budget = f"{cfg.time_budget}s"  # a bare YAML number means seconds
    for name, field in FIELDS.items():
        value = getattr(cfg, name)
        kind = field.type if isinstance(field.type, str) else field.type.__name__
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    setattr(cfg, name, int(value))
                else:
                    raise UserError(f"config key '{name}' must be an integer, got {value!r}")
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"config key '{name}' must be a number, got {value!r}")
            setattr(cfg, name, float(value))
        elif kind == "bool" and not isinstance(value, bool):
            raise UserError(f"config key '{name}' must be true or false, got {value!r}")
        elif kind == "str" and not isinstance(value, str):
            raise UserError(f"config key '{name}' must be a string, got {value!r}")
    for name, allowed in _CHOICES.items():
        if getattr(cfg, name) not in allowed:
            shown = ", ".join(a for a in allowed if a)
            raise UserError(f"unknown {name} '{getattr(cfg, name)}' (choose from {shown})")
    for name, low in _MINIMUMS.items():
        if getattr(cfg, name) < low:
            raise UserError(f"config key '{name}' must be >= {low}, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.champion_tolerance <= 1.0:
        raise UserError("config key 'champion_tolerance' must be between 0 and 1")
    for name in ("val_fraction", "test_fraction"):
        if not 0.0 < getattr(cfg, name) < 0.5:
            raise UserError(f"config key '{name}' must be between 0 and 0.5")
    _validate_data_options(cfg)
    _validate_tuning(cfg)
    _validate_cross_validation(cfg)
    if not isinstance(cfg.thresholds, dict):
        raise UserError("config key 'thresholds' must be a mapping of metric name to value")
    for metric, value in cfg.thresholds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"threshold for '{metric}' must be a number, got {value!r}")
    if not cfg.data:
        raise UserError("config key 'data' must not be empty")
    if not cfg.model_name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UserError(
            f"model name '{cfg.model_name}' may hold only letters, digits, '-', '_' and '.'"
        )


def _validate_tuning(cfg: RunConfig) -> None:
    from kerasflow import budget, search_space

    if cfg.kfold == 1:
        raise UserError("config key 'kfold' must be 0 (no cross-validation) or at least 2")
    budget.parse_time_budget(cfg.time_budget)
    search_space.validate_overrides(cfg.search_space)
    if cfg.build_model and ":" not in cfg.build_model:
        raise UserError(f"build_model '{cfg.build_model}' is not of the form module:function")
    if cfg.objective and not cfg.objective.replace("_", "").isalnum():
        raise UserError(f"objective '{cfg.objective}' is not a metric name")


def _validate_data_options(cfg: RunConfig) -> None:
    for name in ("max_missing_share", "max_anomaly_share"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise UserError(f"config key '{name}' must be between 0 and 1")
    if cfg.folds == 1:
        raise UserError("config key 'folds' must be 0 (no k-fold) or at least 2")
    if cfg.folds and cfg.time_column:
        raise UserError("k-fold splits ('folds') cannot be combined with a time-ordered split")
    dataoptions.parse_image_size(cfg.image_size)
    dataoptions.check_methods(dataoptions.parse_methods(cfg.augment_methods))


def _validate_cross_validation(cfg: RunConfig) -> None:
    """k-fold scores hold out each original row with its augmented copies; rows that SMOTE or
    mixup synthesize from two rows belong to no single fold, so they would leak held-out rows
    into training."""
    if not (cfg.kfold or cfg.folds):
        return
    option = "kfold" if cfg.kfold else "folds"
    if cfg.imbalance == "smote":
        raise UserError(
            f"'{option}' cannot be combined with imbalance 'smote': synthetic rows would mix "
            "rows of different folds; use imbalance 'class_weights'"
        )
    methods = dataoptions.parse_methods(cfg.augment_methods)
    mixing = [m for m in methods if m in ("smote", "mixup")]
    if cfg.augment_factor and mixing:
        raise UserError(
            f"'{option}' cannot be combined with augment method '{mixing[0]}': synthetic rows "
            "would mix rows of different folds; use 'noise'"
        )


def parse_thresholds(items: list[str]) -> dict[str, float]:
    """Parses `metric=value` strings (from `--threshold`) into a mapping.

    Raises:
        UserError: when an item is not `name=number`.
    """
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"threshold '{item}' is not of the form metric=number") from None
    return out


def load_config_file(path: str) -> dict[str, Any]:
    """Reads a YAML config file into a mapping of known keys.

    Raises:
        UserError: when the file is missing, is not YAML mapping, or holds an unknown key.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of keys to values")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise UserError(f"unknown config key '{unknown[0]}' in {path}")
    return data


def build_config(file_values: dict[str, Any], overrides: dict[str, Any]) -> RunConfig:
    """Merges config-file values with flag overrides (flags win) into a validated RunConfig."""
    merged = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return RunConfig(**merged)
    except TypeError as exc:
        raise UserError(f"bad config: {exc}") from None


def default_thresholds(task: str) -> dict[str, float]:
    """The blessing thresholds used when the user gives none."""
    return {"accuracy": 0.7} if task == "classification" else {"r2": 0.2}
