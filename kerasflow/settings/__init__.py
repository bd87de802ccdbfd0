"""Typed settings: one class per step, composed into the run's settings.

Each setting is declared once (kerasflow.settings.steps); the `kerasflow run` flags, the YAML
keys, validation with one-line errors and the KFP parameters derive from the declarations.
"""

from kerasflow.settings.base import StepSettings
from kerasflow.settings.run import (
    DEFAULT_WORK_DIR,
    RunSettings,
    default_thresholds,
    load_config_file,
    parse_thresholds,
    resolve_tracking_uri,
    settings_parameter,
)
from kerasflow.settings.steps import (
    DRIFT_STEP,
    STEP_SETTINGS,
    STEPS,
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

DEFAULT_IMAGE = "ghcr.io/kerasflow/kerasflow:0.1.0"
"""The one container image every component runs in (`kerasflow compile --image` overrides it)."""

__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_WORK_DIR",
    "DRIFT_STEP",
    "STEPS",
    "STEP_SETTINGS",
    "WHEN_CHOICES",
    "AugmentSettings",
    "DeploySettings",
    "DriftSettings",
    "EvaluateSettings",
    "IngestSettings",
    "RunSettings",
    "SearchSettings",
    "SplitSettings",
    "StepSettings",
    "TrainSettings",
    "default_thresholds",
    "load_config_file",
    "parse_thresholds",
    "resolve_tracking_uri",
    "settings_parameter",
]
