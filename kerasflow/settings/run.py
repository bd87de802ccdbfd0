"""The run's settings: every step's settings composed, read from YAML and flags, checked across
steps, and turned into the pipeline's parameters.

A config file (and the flags) name settings by their key alone (`max_trials: 6`); a key that
several steps read (`seed`) sets it for all of them. A mapping under a step's name sets that
step alone (`train: {batch_size: 64}`). Nothing here reads the environment at import time.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kerasflow import constants as C
from kerasflow.data import choices
from kerasflow.runtime.errors import UserError
from kerasflow.runtime.yaml_files import read_mapping
from kerasflow.settings.base import StepSettings, check_no_headline_keys
from kerasflow.settings.steps import (
    DRIFT_STEP,
    STEP_SETTINGS,
    WHEN_CHOICES,
    AugmentSettings,
    DeploySettings,
    DriftSettings,
    EvaluateSettings,
    IngestSettings,
    SearchSettings,
    SplitSettings,
    TrainSettings,
)

DEFAULT_WORK_DIR = "kerasflow-work"
RUN_KEYS = {
    "tracking_uri": "MLflow tracking URI (else MLFLOW_TRACKING_URI, else SQLite in WORK_DIR)",
    "experiment": "MLflow experiment name",
    "work_dir": f"where runs keep their files (default ./{DEFAULT_WORK_DIR})",
    "when": "train always, or only when the data drifted from the champion's training data "
    "(drifted; the drift_check step decides first) (default always)",
}
"""Settings of the run itself rather than of a step, with their help."""

RUN_SECONDS = {
    "tracking_timeout": "seconds a step keeps trying an MLflow tracking server that does not "
    "answer before the run stops with an error (default 60)",
    "run_lease": "seconds without a heartbeat after which a RUNNING MLflow run counts as "
    "orphaned and the next run ends it KILLED (default 120)",
}
"""Durations of the run itself (numbers of seconds > 0), with their help."""

RUN_COUNTS = {
    "keep_versions": "after a run, delete what `kerasflow gc --keep N` deletes: serving and "
    "registry versions of the model older than the newest N (never the champion or a served "
    "or claimed version) and older pipeline roots, tuner dirs and logs in WORK_DIR (default 0: "
    "keep everything)",
}
"""Counts of the run itself (integers >= 0), with their help."""


@functools.cache
def step_of_keys() -> dict[str, tuple[str, ...]]:
    """Each setting's key -> the steps that read it, in DAG order."""
    out: dict[str, tuple[str, ...]] = {}
    for step, model in STEP_SETTINGS.items():
        for name in model.model_fields:
            out[name] = (*out.get(name, ()), step)
    return out


def field_of(name: str) -> tuple[type[StepSettings], Any]:
    """The settings class that declares `name` first, and the field's declaration."""
    step = step_of_keys()[name][0]
    model = STEP_SETTINGS[step]
    return model, model.model_fields[name]


class RunSettings(BaseModel):
    """Every setting of one training run: each step's settings and where the run keeps things.

    Build it with `RunSettings.from_values` from a config file's mapping and flag overrides;
    `RunSettings()` is the embedded default run.
    """

    model_config = ConfigDict(extra="forbid")

    ingest_clean: IngestSettings = Field(default_factory=IngestSettings)
    normalize_split: SplitSettings = Field(default_factory=SplitSettings)
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    hyperparameter_search: SearchSettings = Field(default_factory=SearchSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    drift_check: DriftSettings = Field(default_factory=DriftSettings)
    tracking_uri: str = ""
    experiment: str = C.DEFAULT_EXPERIMENT
    work_dir: str = DEFAULT_WORK_DIR
    when: str = "always"
    tracking_timeout: float = 60.0
    run_lease: float = 120.0
    keep_versions: int = 0

    @classmethod
    def from_values(
        cls, values: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> RunSettings:
        """Validated settings from a config mapping and flag overrides (flags win).

        Args:
            values: Keys of any step (applied to every step that reads them), step names
                mapping to that step's keys, and the run keys (`work_dir`...).
            overrides: Keys as in `values`; None values are ignored (flags not given).

        Raises:
            UserError: one line naming the first unknown key or bad value.
        """
        owners = step_of_keys()
        flat: dict[str, dict[str, Any]] = {step: {} for step in STEP_SETTINGS}
        flags: dict[str, dict[str, Any]] = {step: {} for step in STEP_SETTINGS}
        sections: dict[str, dict[str, Any]] = {}
        run: dict[str, Any] = {}
        given = [(key, value, flat) for key, value in (values or {}).items()]
        given += [(k, v, flags) for k, v in (overrides or {}).items() if v is not None]
        for key, value, target in given:
            if key == DRIFT_STEP:
                if not isinstance(value, Mapping):
                    raise UserError(f"config key '{key}' must be a mapping of that step's keys")
                run[key] = DriftSettings.parse({_key(k): v for k, v in value.items()})
            elif key in STEP_SETTINGS:
                if not isinstance(value, Mapping):
                    raise UserError(f"config key '{key}' must be a mapping of that step's keys")
                sections[key] = {_key(k): v for k, v in value.items()}
            elif key in RUN_KEYS:
                if not isinstance(value, str):
                    raise UserError(f"config key '{key}' must be a string, got {value!r}")
                if key == "when" and value not in WHEN_CHOICES:
                    raise UserError(f"unknown when '{value}' (choose from always, drifted)")
                run[key] = value
            elif key in RUN_SECONDS:
                if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                    raise UserError(
                        f"config key '{key}' must be a number of seconds > 0, got {value!r}"
                    )
                run[key] = float(value)
            elif key in RUN_COUNTS:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise UserError(f"config key '{key}' must be an integer >= 0, got {value!r}")
                run[key] = value
            elif key in owners:
                _, field = field_of(key)
                if (field.json_schema_extra or {}).get("cluster_only"):
                    raise UserError(
                        f"config key '{key}' only means something on a cluster (kerasflow "
                        "submit --param), not in a local run"
                    )
                for step in owners[key]:
                    target[step][key] = value
            else:
                raise UserError(f"unknown config key '{key}'")
        steps = {}
        for step, model in STEP_SETTINGS.items():
            section = sections.get(step, {})
            unknown = sorted(set(section) - set(model.model_fields))
            if unknown:
                raise UserError(f"unknown config key '{unknown[0]}' for step {step}")
            for key in section:
                if key in model.HEADLINE and len(owners[key]) > 1:
                    raise UserError(
                        f"config key '{key}' is one pipeline parameter for the steps "
                        f"{', '.join(owners[key])}: set it at the top level, not under {step}"
                    )
            # A file's step section beats its top-level keys; flags beat the whole file.
            steps[step] = model.parse({**flat[step], **section, **flags[step]})
        out = cls(**steps, **run)
        out.check_across_steps()
        return out

    def check_across_steps(self) -> None:
        """Checks what no single step can: combinations of settings of different steps.

        Raises:
            UserError: naming the settings that do not go together.
        """
        split, search, augment = self.normalize_split, self.hyperparameter_search, self.augment
        train = self.train
        for step in (search, train):
            if step.base_model and step.build_model:
                raise UserError("base_model and build_model cannot be combined: pick one model")
        if train.base_model != search.base_model:
            raise UserError("the search and the final fit must use the same base_model")
        if train.base_model and (train.refit or train.warm_start):
            option = "refit" if train.refit else "warm_start"
            raise UserError(f"base_model cannot be combined with '{option}'")
        if split.folds and split.time_column:
            raise UserError("k-fold splits ('folds') cannot be combined with a time-ordered split")
        if search.kfold and split.time_column:
            # Shuffled folds would score each trial on rows older than some it trained on.
            raise UserError(
                "k-fold cross-validation ('kfold') cannot be combined with a time-ordered split: "
                "its folds would train on rows newer than those they score"
            )
        # k-fold scores hold out each original row with its augmented copies; rows that SMOTE
        # or mixup synthesize from two rows belong to no single fold and would leak.
        if not (search.kfold or split.folds):
            return
        option = "kfold" if search.kfold else "folds"
        if split.imbalance == "smote":
            raise UserError(
                f"'{option}' cannot be combined with imbalance 'smote': synthetic rows would "
                "mix rows of different folds; use imbalance 'class_weights'"
            )
        methods = choices.parse_methods(augment.augment_methods)
        mixing = [m for m in methods if m in ("smote", "mixup")]
        if augment.augment_factor and mixing:
            raise UserError(
                f"'{option}' cannot be combined with augment method '{mixing[0]}': synthetic "
                "rows would mix rows of different folds; use 'noise'"
            )

    def resolved_serving_dir(self) -> str:
        """The serving base directory: the setting, else `<work_dir>/models`."""
        return self.deploy.serving_dir or str(Path(self.work_dir, "models").absolute())

    def resolved_tracking_uri(self) -> str:
        """The MLflow tracking URI: the setting, else MLFLOW_TRACKING_URI, else SQLite."""
        return resolve_tracking_uri(self.tracking_uri, self.work_dir)

    @classmethod
    def from_pipeline_arguments(cls, arguments: Mapping[str, Any]) -> RunSettings:
        """Validated settings from pipeline arguments (headline parameters and the steps'
        settings structures); what they leave out takes its default.

        Raises:
            UserError: naming the first bad key or value.
        """
        steps = {}
        for step, model in STEP_SETTINGS.items():
            structure = arguments.get(settings_parameter(step)) or {}
            if not isinstance(structure, Mapping):
                raise UserError(f"parameter '{settings_parameter(step)}' must be a mapping")
            check_no_headline_keys(model, structure)
            # Headline parameters, and in a pipeline of one's own any parameter named as a
            # setting, apply to every step that reads that setting.
            flat = {k: v for k, v in arguments.items() if k in model.model_fields}
            steps[step] = model.parse({**structure, **flat})
        run = {k: arguments[k] for k in ("tracking_uri", "experiment") if k in arguments}
        out = cls(**steps, **run)
        out.check_across_steps()
        return out

    def config_values(self) -> dict[str, Any]:
        """Every setting of a local run as a `--config` mapping, each key once (a key several
        steps read is one value), in DAG order after the run keys."""
        values: dict[str, Any] = {k: getattr(self, k) for k in (*RUN_KEYS, *RUN_SECONDS)}
        for step in STEP_SETTINGS:
            for key, value in getattr(self, step).model_dump(mode="json").items():
                _, field = field_of(key)
                if not (field.json_schema_extra or {}).get("cluster_only"):
                    values.setdefault(key, value)
        return values

    def pipeline_arguments(self) -> dict[str, Any]:
        """The pipeline's parameters for this run: the headline settings and one structure of
        the other settings per step, with paths resolved for this machine."""
        args: dict[str, Any] = {}
        for step, model in STEP_SETTINGS.items():
            own = getattr(self, step)
            for name in model.HEADLINE:
                args[name] = getattr(own, name)
            args[settings_parameter(step)] = own.model_dump(exclude=set(model.HEADLINE))
        args["serving_dir"] = self.resolved_serving_dir()
        args["tracking_uri"] = self.resolved_tracking_uri()
        args["experiment"] = self.experiment
        if self.when == "drifted":
            args[settings_parameter(DRIFT_STEP)] = self.drift_check.model_dump()
        return args


def settings_parameter(step: str) -> str:
    """The pipeline parameter that carries `step`'s settings structure."""
    return f"{step}_settings"


def resolve_tracking_uri(tracking_uri: str, work_dir: str = DEFAULT_WORK_DIR) -> str:
    """The given URI, else MLFLOW_TRACKING_URI, else SQLite in the work directory."""
    if tracking_uri:
        return tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI", "")
    if env:
        return env
    return "sqlite:///" + str(Path(work_dir, "mlflow.db").absolute())


def _key(name: Any) -> str:
    """A config key as written (`max-trials` or `max_trials`) in its declared form."""
    return str(name).replace("-", "_")


def load_config_file(path: str) -> dict[str, Any]:
    """Reads a YAML config file into a mapping (keys with dashes become underscores).

    Unknown keys are refused when the mapping is turned into settings.

    Raises:
        UserError: when the file is missing or is not a YAML mapping.
    """
    data = read_mapping(path, "config file")
    return {_key(k): v for k, v in data.items()}


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


def default_thresholds(task: str) -> dict[str, float]:
    """The blessing thresholds used when the user gives none."""
    return {"accuracy": 0.7} if task == "classification" else {"r2": 0.2}


def fold_flat_parameters(params: Mapping[str, Any], declared: Mapping[str, Any]) -> dict[str, Any]:
    """Pipeline arguments with old flat parameter names folded into their step's structure.

    Before the settings structures, every setting was a pipeline parameter of its own
    (`augment_factor=2`); such a name still works for one release, with a warning.

    Args:
        params: Parameter name -> value, as a user gave them.
        declared: The compiled pipeline's parameters (name -> type); only their names matter.

    Raises:
        UserError: for a name that is neither a parameter nor a setting.
    """
    out = {name: value for name, value in params.items() if name in declared}
    owners = step_of_keys()
    for name, value in params.items():
        if name in declared:
            continue
        if name not in owners:
            known = ", ".join(sorted(declared)) or "none"
            raise UserError(f"unknown pipeline parameter '{name}' (parameters: {known})")
        for step in owners[name]:
            target = settings_parameter(step)
            # A copy, so a structure the user passed is not changed in place.
            out[target] = {**out.get(target, {}), name: value}
        warnings.warn(
            f"pipeline parameter '{name}' is now the key '{name}' of "
            f"{', '.join(settings_parameter(s) for s in owners[name])}; "
            "the old name goes in the next release",
            FutureWarning,
            stacklevel=2,
        )
    return out
