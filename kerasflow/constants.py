"""Artifact file names, metadata keys and other names shared between steps.

Every step reads and writes its artifacts through these names, so a rename happens in one place.
"""

# Files inside a Dataset artifact directory.
META_FILE = "meta.json"
TABLE_FILE = "data.parquet"
ARRAYS_FILE = "data.npz"
SPLITS = ("train", "val", "test")

# Files inside other artifacts.
HPARAMS_FILE = "best_hyperparameters.json"
TRIALS_FILE = "trials.csv"
KERAS_MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
HISTORY_FILE = "history.json"
PREDICTIONS_FILE = "predictions.npz"
SCHEMA_FILE = "schema.json"
# The search's finished trials, best first (inside its `trials` artifact).
RANKED_TRIALS_FILE = "ranked_trials.json"
# An ensemble's description and its members' `.keras` files (inside the model artifact).
ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_MEMBERS_DIR = "members"
# TensorBoard logs (inside the model and trials artifacts, and as MLflow artifacts).
TENSORBOARD_DIR = "tensorboard"
# TFLite conversions of the final model and their checks (inside the model artifact).
TFLITE_DIR = "tflite"
TFLITE_REPORT_FILE = "tflite.json"
# The TensorFlow.js graph model of the final model and its check (inside the model artifact).
TFJS_DIR = "tfjs"
TFJS_REPORT_FILE = "tfjs.json"

# Keys of the bundle metadata (meta.json).
META_MODALITY = "modality"
META_TASK = "task"
META_LABEL = "label"
META_FEATURES = "features"
META_CLASS_NAMES = "class_names"
META_IMAGE_SHAPE = "image_shape"
META_NORMALIZATION = "normalization"
META_ROWS = "rows"
META_SOURCE = "source"
META_DATA_HASH = "data_hash"
# The cleaning policy the split step applies with statistics of the train split.
META_CLEANING = "cleaning"
# How a transfer model is built: its pretrained base, the base's weights and input size, the
# train split's pixel range (kerasflow.modeling.transfer). Attached by the search and train steps.
META_TRANSFER = "transfer"

MODALITIES = ("tabular", "image", "text")
TASKS = ("classification", "regression")
TUNERS = ("random", "grid", "bayesian", "hyperband")

# Model signature names.
IMAGE_INPUT = "image"
TEXT_INPUT = "text"
SERVING_SIGNATURE = "serving_default"
SERVING_OUTPUT = "output_0"
# Classification exports also answer with class names under this signature (see
# kerasflow.modeling.export): outputs `scores`, `classes` and `class_names`.
CLASSIFY_SIGNATURE = "classify"

# MLflow tag names.
TAG_KFP_RUN_ID = "kfp.run_id"
TAG_KFP_PIPELINE = "kfp.pipeline_name"
TAG_STEP = "kerasflow.step"
TAG_KIND = "kerasflow.kind"
TAG_BLESSED = "kerasflow.blessed"
TAG_MODEL_VERSION = "kerasflow.model_version"
TAG_MODEL_PATH = "kerasflow.model_path"
TAG_BEST_HPARAMS = "kerasflow.best_hyperparameters"
TAG_REGISTRY_VERSION = "kerasflow.registry_version"
# The train run's LoggedModel (MLflow's Keras flavor), as a models:/ URI.
TAG_LOGGED_MODEL_URI = "kerasflow.logged_model_uri"
# JSON: the MLflow artifact folder of the evaluation's pictures and their file names.
TAG_PICTURES = "kerasflow.evaluation_pictures"
# JSON: an ensemble's method and its test score against its best member's.
TAG_ENSEMBLE = "kerasflow.ensemble"
KIND_PIPELINE = "pipeline"
KIND_STEP = "step"
KIND_TRIAL = "trial"

# Test metrics the evaluate step reports, and what blessing thresholds may name.
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse", "r2")
# A metric whose name holds one of these words is better when lower (val_loss, mae, rmse...).
LOWER_IS_BETTER_WORDS = ("loss", "mae", "mse", "rmse", "error", "crossentropy")


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` is better (losses and errors)."""
    return any(word in metric.lower() for word in LOWER_IS_BETTER_WORDS)


PIPELINE_NAME = "kerasflow-training"
DEFAULT_EXPERIMENT = "kerasflow"
