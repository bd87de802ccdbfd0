"""Every setting of every step, declared once.

Each step has one settings class; a setting that several steps read (the seed, the batch size,
the served model's name...) is declared once in a small mixin that those steps inherit, so its
name, default and help exist in one place. `STEP_SETTINGS` maps the pipeline's step names to
their classes in DAG order. Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import field_validator, model_validator

from kerasflow import constants as C
from kerasflow.data import choices
from kerasflow.modeling.transfer import BASE_NAMES
from kerasflow.runtime.errors import UserError
from kerasflow.settings.base import Flag, Integer, Number, StepSettings, Text, setting

EXPORT_FORMATS = ("tflite", "tfjs")


def parse_exports(text: str) -> tuple[str, ...]:
    """The export formats of a comma list (`tflite,tfjs`), in order, without repeats.

    Raises:
        UserError: for an unknown format, or `tfjs` when its converter (a venv of its own, made
            by `.ci/setup-tfjs.sh`), @tensorflow/tfjs or Node is missing, so that the run stops
            before any step.
    """
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    for name in names:
        if name not in EXPORT_FORMATS:
            raise UserError(f"unknown export '{name}' (choose from {', '.join(EXPORT_FORMATS)})")
        if name == "tfjs":
            from kerasflow.modeling.tfjs import check_available

            check_available()
    return names


# --- settings several steps read ---------------------------------------------------------


class Seeded(StepSettings):
    """Steps whose results depend on a random seed."""

    seed: Integer = setting(42, "random seed of the split, augmentation, search and fits", ge=0)


class TimeOrdered(StepSettings):
    """Steps that know the data's time column."""

    time_column: Text = setting("", "split by time: oldest rows train, newest test")


class Fitting(StepSettings):
    """Steps that fit models (the search's trials and the final fit)."""

    batch_size: Integer = setting(32, "batch size when the search space does not tune it", ge=1)
    patience: Integer = setting(3, "epochs without improvement before early stopping", ge=1)
    stream_rows: Integer = setting(
        1_000_000,
        "a train table of more rows is read a row group at a time, not held in memory (0: never)",
        ge=0,
    )


class Objective(StepSettings):
    """Steps that rank models by a validation metric."""

    objective: Text = setting("", "metric to optimize (val_accuracy; regression val_loss)")
    direction: Literal["", "max", "min"] = setting("", "max or min (inferred from the objective)")

    @field_validator("objective")
    @classmethod
    def _metric_name(cls, value: str) -> str:
        if value and not value.replace("_", "").isalnum():
            raise UserError(f"objective '{value}' is not a metric name")
        return value


class UserModel(StepSettings):
    """Steps that build the user's own model when one is given."""

    build_model: Text = setting(
        "", "your own model: module:function or file.py:function taking hp (and meta)"
    )

    @field_validator("build_model")
    @classmethod
    def _reference(cls, value: str) -> str:
        if value and ":" not in value:
            raise UserError(f"build_model '{value}' is not of the form module:function")
        return value


class Transfer(StepSettings):
    """Steps that build models over a pretrained image base (the search's heads, the final fit)."""

    base_model: Literal[("", *BASE_NAMES)] = setting(
        "", "images: a pretrained keras.applications base under a tuned head (transfer learning)"
    )
    base_weights: Text = setting(
        "imagenet",
        "weights of base_model: imagenet (from the Keras cache) or a weights file or saved "
        "base model (.keras)",
    )
    base_image_size: Integer = setting(
        0, "side the base sees: images are resized inside the model (0: theirs, at least 32)", ge=0
    )


class ModelName(StepSettings):
    """Steps that know the served model's name."""

    model_name: Text = setting("kerasflow-model", "name of the served model")

    @field_validator("model_name")
    @classmethod
    def _servable_name(cls, value: str) -> str:
        if not value.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise UserError(f"model name '{value}' may hold only letters, digits, '-', '_' and '.'")
        return value


class ServingDir(StepSettings):
    """Steps that read or write the TF Serving model directory."""

    serving_dir: Text = setting("", "TF Serving model base directory (default WORK_DIR/models)")


# --- the steps ---------------------------------------------------------------------------


# `schema` is the user's key; pydantic's deprecated `BaseModel.schema()` is never used here.
warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)


class IngestSettings(TimeOrdered):
    """ingest_clean: where the data are, how to read, validate and clean them."""

    HEADLINE = ("data", "label", "task")

    data: Text = setting(
        "builtin:digits",
        "data URI: builtin:NAME, a local file or folder, or gs://...",
        min_length=1,
    )
    label: Text = setting("", "label column (table data)")
    task: Literal[("", *C.TASKS)] = setting(
        "", "classification or regression (inferred when absent)"
    )
    modality: Literal[("", *C.MODALITIES)] = setting(
        "", "tabular, image or text (inferred when absent)"
    )
    text_column: Text = setting("", "the free-text column of a table (inferred when absent)")
    image_size: Text = setting("", "resize images to N or HxW (default: the most common size)")
    missing_values: Literal[choices.MISSING_POLICIES] = setting(
        "median", "how missing numbers are handled (categories take the most frequent value)"
    )
    outliers: Literal[choices.OUTLIER_METHODS] = setting(
        "iqr", "outlier rule, with bounds from the train split"
    )
    outlier_action: Literal[choices.OUTLIER_ACTIONS] = setting(
        "clip", "what to do with outliers (the served model clips to the same bounds)"
    )
    drop_duplicates: Flag = setting(True, "drop repeated rows")
    drop_id_columns: Flag = setting(True, "drop columns whose value is unique per row")
    schema: Text = setting("", "saved schema to validate the data against (schema.json or folder)")
    max_missing_share: Number = setting(
        0.3, "schema limit on a column's share of missing values", ge=0.0, le=1.0
    )
    max_anomaly_share: Number = setting(
        0.01, "share of out-of-range or new-category values allowed", ge=0.0, le=1.0
    )
    min_class_rows: Integer = setting(3, "fewest rows a class may have", ge=1)

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, value: str) -> str:
        choices.parse_image_size(value)
        return value


class SplitSettings(Seeded, TimeOrdered):
    """normalize_split: the train/val/test split and what is fitted on the train split."""

    HEADLINE = ("seed",)

    val_fraction: Number = setting(0.15, "share of rows for validation", gt=0.0, lt=0.5)
    test_fraction: Number = setting(0.15, "share of rows for the test split", gt=0.0, lt=0.5)
    scaling: Literal[choices.SCALINGS] = setting("zscore", "numeric scaling inside the model")
    imbalance: Literal[choices.IMBALANCE_POLICIES] = setting(
        "class_weights", "class weights, SMOTE oversampling of the train split, or none"
    )
    folds: Integer = setting(0, "also assign k cross-validation folds (0: off)", ge=0)

    @field_validator("folds")
    @classmethod
    def _fold_count(cls, value: int) -> int:
        if value == 1:
            raise UserError("config key 'folds' must be 0 (no k-fold) or at least 2")
        return value


class AugmentSettings(Seeded):
    """augment: seeded copies of the train split."""

    HEADLINE = ("seed",)

    augment_factor: Integer = setting(
        1, "augmented copies of each training row (0 turns it off)", ge=0
    )
    augment_flip: Flag = setting(False, "add image flips to the augmentation methods")
    augment_methods: Text = setting(
        "",
        "comma list: image flip,rotation,zoom,translation,contrast,noise; table noise,smote,"
        "mixup; text deletion,swap,insertion,synonym (default: per modality)",
    )
    synonyms: Text = setting("", "JSON/YAML word map (word: [synonyms]) for synonym replacement")

    @field_validator("augment_methods")
    @classmethod
    def _methods(cls, value: str) -> str:
        choices.check_methods(choices.parse_methods(value))
        return value


class SearchSettings(Seeded, Fitting, Objective, UserModel, Transfer):
    """hyperparameter_search: KerasTuner over the search space."""

    HEADLINE = ("tuner", "max_trials", "seed", "build_model", "worker_pods")

    tuner: Literal[C.TUNERS] = setting("hyperband", "the search algorithm")
    max_trials: Integer = setting(10, "trials for random, grid and bayesian search", ge=1)
    max_epochs: Integer = setting(9, "epochs per trial (hyperband: the most a trial gets)", ge=1)
    search_space: dict[str, Any] = setting(
        {}, "hyperparameter -> value, list or {min, max} (YAML only)", flag=False
    )
    time_budget: Text = setting("", "wall-clock budget of the search, e.g. 90s, 10m, 1h30m (none)")
    max_consecutive_failures: Integer = setting(
        3, "failed trials in a row that stop the search", ge=1
    )
    kfold: Integer = setting(0, "score each trial by k-fold cross-validation (0: off)", ge=0)
    tuner_workers: Integer = setting(1, "trial processes in parallel inside the search step", ge=1)
    trials_per_process: Integer = setting(
        5, "trials a worker process runs before a fresh one takes over (0: all in the step)", ge=0
    )
    tensorboard_trials: Flag = setting(
        False, "every trial also writes TensorBoard logs (into the search's trials artifact)"
    )
    hyperparameters: dict[str, Any] = setting(
        {},
        "fixed hyperparameters: no search, the final fit takes these (kerasflow reproduce "
        "sets a run's best ones; YAML only)",
        flag=False,
    )
    tuner_dir: Text = setting(
        "", "tuner directory on storage the worker pods share", cluster_only=True
    )
    worker_pods: Integer = setting(
        0, "extra pods that run trials beside the search step", cluster_only=True, ge=0
    )

    @field_validator("time_budget", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        from kerasflow.runtime.budget import parse_time_budget

        if isinstance(value, int | float) and not isinstance(value, bool):
            value = f"{value}s"  # a bare YAML number means seconds
        parse_time_budget(value)
        return value

    @field_validator("kfold")
    @classmethod
    def _fold_count(cls, value: int) -> int:
        if value == 1:
            raise UserError("config key 'kfold' must be 0 (no cross-validation) or at least 2")
        return value

    @field_validator("hyperparameters")
    @classmethod
    def _fixed(cls, value: dict) -> dict:
        out = {}
        for name, item in value.items():
            if not isinstance(item, str | int | float | bool) or item is None:
                raise UserError(
                    f"hyperparameter '{name}' must be a single value (string, number or bool)"
                )
            # A dict parameter comes back from KFP's JSON with its ints as floats (32.0);
            # counts such as `units` and `num_layers` must be ints again.
            is_whole = isinstance(item, float) and item.is_integer()
            out[str(name)] = int(item) if is_whole else item
        return out

    @field_validator("search_space")
    @classmethod
    def _space(cls, value: dict) -> dict:
        from kerasflow.modeling.search_space import validate_overrides

        validate_overrides(value)
        return value


class TrainSettings(Seeded, Fitting, Objective, UserModel, Transfer, ModelName, ServingDir):
    """train: the final fit on the best hyperparameters."""

    HEADLINE = ("final_epochs", "seed", "build_model", "model_name", "serving_dir")

    final_epochs: Integer = setting(
        30, "most epochs of the final fit (early stopping ends it sooner)", ge=1
    )
    label_smoothing: Number = setting(
        0.0, "classification: fit on one-hot targets smoothed by this share", ge=0.0, lt=1.0
    )
    lr_schedule: Literal["", "cosine", "exponential"] = setting(
        "", "learning-rate schedule of the final fit: cosine or exponential"
    )
    refit: Flag = setting(False, "refit the final model on train+val for the best epoch count")
    warm_start: Flag = setting(
        False, "fine-tune the serving champion instead of training from scratch"
    )
    ensemble: Integer = setting(
        0, "combine the search's K best distinct trials into one model (0 or 1: off)", ge=0
    )
    ensemble_method: Literal["average", "stacking"] = setting(
        "average", "how an ensemble combines its members: average or stacking"
    )
    ensemble_weights: Literal["score", "equal"] = setting(
        "score", "averaging weights: by validation score or equal"
    )
    export: Text = setting("", "extra exports of the final model, comma list: tflite, tfjs (none)")
    tensorboard: Flag = setting(True, "the final fit writes TensorBoard logs")
    fine_tune_layers: Integer = setting(
        20, "base_model: weighted layers at the base's top unfrozen after the head's fit", ge=0
    )
    fine_tune_epochs: Integer = setting(
        5, "base_model: most epochs of fine-tuning at a 10x lower learning rate (0: none)", ge=0
    )
    train_workers: Integer = setting(
        1, "machines of the final fit (MultiWorkerMirroredStrategy); 1: this one's GPUs", ge=1
    )
    deterministic: Flag = setting(
        False,
        "TensorFlow op determinism in the final fit: the same seed gives the same model "
        "(slower; kerasflow reproduce turns it on)",
    )

    @field_validator("train_workers")
    @classmethod
    def _one_machine(cls, value: int) -> int:
        if value > 1:
            from kerasflow.modeling.distribute import MULTI_WORKER_BLOCKED

            raise UserError(f"train_workers {value}: {MULTI_WORKER_BLOCKED}")
        return value

    @field_validator("export")
    @classmethod
    def _exports(cls, value: str) -> str:
        parse_exports(value)
        return value

    @model_validator(mode="after")
    def _ensemble_alone(self) -> TrainSettings:
        if self.ensemble > 1 and self.warm_start:
            raise UserError(
                "'ensemble' cannot be combined with 'warm_start': an ensemble's members are "
                "fitted from scratch"
            )
        return self


class EvaluateSettings(ModelName):
    """evaluate: test metrics and the promotion gate."""

    HEADLINE = ("thresholds", "model_name")

    thresholds: dict[str, float] = setting(
        {}, "blessing thresholds, metric -> value (default accuracy 0.7 or r2 0.2)", flag=False
    )
    champion_tolerance: Number = setting(
        0.01,
        "how much worse than the champion a model may be and still be blessed",
        ge=0.0,
        le=1.0,
    )
    slice_by: Text = setting("", "also report test metrics per value of this column")
    allow_thresholds_only: Flag = setting(
        False,
        "bless on the thresholds alone when the champion cannot be evaluated (a registry "
        "error, a champion that cannot be loaded or scored); off: such a model is not blessed",
    )
    publish: Flag = setting(
        True,
        "deploy a blessed model (off: evaluate and report only, as kerasflow reproduce does "
        "unless asked to deploy)",
    )
    allow_signature_change: Flag = setting(
        False,
        "declare a change of the serving signature (inputs, outputs, class labels) from the "
        "champion's; off: a model whose signature differs is not blessed",
    )

    @field_validator("thresholds", mode="before")
    @classmethod
    def _thresholds(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise UserError("config key 'thresholds' must be a mapping of metric name to value")
        known = C.CLASSIFICATION_METRICS + C.REGRESSION_METRICS
        for metric, number in value.items():
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise UserError(f"threshold for '{metric}' must be a number, got {number!r}")
            if metric not in known:
                raise UserError(
                    f"threshold on unknown metric '{metric}' (choose from "
                    f"{', '.join(sorted(known))})"
                )
        return {str(k): float(v) for k, v in value.items()}


class DeploySettings(ModelName, ServingDir):
    """deploy: publishing a blessed model for TF Serving."""

    HEADLINE = ("model_name", "serving_dir")

    canary: Flag = setting(
        False,
        "publish beside the served version as the `canary` label (it keeps `stable`); "
        "`kerasflow canary` then promotes or rolls back",
    )


class DriftSettings(StepSettings):
    """drift_check (`kerasflow drift`, `kerasflow run --when drifted`): when new data count as
    drifted from the champion's training data."""

    alpha: Number = setting(
        0.05, "significance level of a drift test, after the correction", gt=0.0, lt=1.0
    )
    min_psi: Number = setting(
        0.2, "smallest population stability index that counts as drift", ge=0.0
    )
    min_oov_increase: Number = setting(
        0.05, "text: smallest rise of the out-of-vocabulary share that counts", ge=0.0, le=1.0
    )
    correction: Literal["bh", "bonferroni"] = setting(
        "bh", "correction of the p-values across features: Benjamini-Hochberg or Bonferroni"
    )


STEP_SETTINGS: dict[str, type[StepSettings]] = {
    "ingest_clean": IngestSettings,
    "normalize_split": SplitSettings,
    "augment": AugmentSettings,
    "hyperparameter_search": SearchSettings,
    "train": TrainSettings,
    "evaluate": EvaluateSettings,
    "deploy": DeploySettings,
}
"""The pipeline's steps in DAG order and their settings classes."""

STEPS = tuple(STEP_SETTINGS)
"""Task names of the kerasflow training DAG, in order."""

DRIFT_STEP = "drift_check"
"""The step that runs first, and alone when nothing drifted, in `--when drifted` pipelines."""
WHEN_CHOICES = ("always", "drifted")
"""When a run trains: every time, or only when its data drifted from the champion's."""
